// The devices a worker offers: the CPU, or the GPUs that nvidia-smi lists.
#ifndef COMPRESS_WORKER_AGENT_DEVICES_H_
#define COMPRESS_WORKER_AGENT_DEVICES_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "compress/v1/worker_service.pb.h"

namespace compress::worker {

// GPUs as nvidia-smi reports them ("cuda:N" with name and memory); empty when nvidia-smi is not
// on PATH or fails.
std::vector<compress::v1::Device> DetectGpus();

// Parses the --devices value: "auto" (every GPU nvidia-smi lists, or "cpu" when there is none),
// or a comma-separated list of "cpu" and "cuda:N". Known GPUs get nvidia-smi's name and memory.
// INVALID_ARGUMENT naming the bad entry.
absl::StatusOr<std::vector<compress::v1::Device>> ParseDevices(const std::string& spec);

}  // namespace compress::worker

#endif  // COMPRESS_WORKER_AGENT_DEVICES_H_
