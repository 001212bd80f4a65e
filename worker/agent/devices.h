// The devices a worker offers: the CPU, or the GPUs that nvidia-smi lists.
#ifndef COMPRESS_WORKER_AGENT_DEVICES_H_
#define COMPRESS_WORKER_AGENT_DEVICES_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "compress/v1/worker_service.pb.h"

namespace compress::worker {

// GPUs as nvidia-smi reports them ("cuda:N" with name and memory); empty when nvidia-smi is not
// on PATH or fails.
std::vector<compress::v1::Device> DetectGpus();

// Parses the --devices value: "auto" (every GPU nvidia-smi lists, or "cpu" when there is none),
// or a comma-separated list of "cpu" and "cuda:N". Known GPUs get nvidia-smi's name and memory;
// a cuda:N that nvidia-smi runs and does not list is refused (without nvidia-smi any N is taken).
// INVALID_ARGUMENT naming the bad entry.
absl::StatusOr<std::vector<compress::v1::Device>> ParseDevices(const std::string& spec);

// How the executor of an attempt on a device is started.
struct ExecutorDevice {
  // The executor's --device.
  std::string flag;
  // Set in the executor's environment.
  std::vector<std::pair<std::string, std::string>> environment;
};

// "cuda:N" runs the executor with CUDA_VISIBLE_DEVICES=N (and CUDA_DEVICE_ORDER=PCI_BUS_ID, the
// order nvidia-smi numbers GPUs in) and --device cuda:0, so that it can neither see nor allocate
// on another job's GPU; "cpu" hides every GPU (CUDA_VISIBLE_DEVICES empty). Anything else is
// passed as it is.
ExecutorDevice ExecutorDeviceFor(const std::string& device);

}  // namespace compress::worker

#endif  // COMPRESS_WORKER_AGENT_DEVICES_H_
