// The devices a worker offers: the CPU, or the GPUs that nvidia-smi lists, numbered as CUDA
// numbers them under the agent's CUDA_VISIBLE_DEVICES.
#ifndef COMPRESS_WORKER_AGENT_DEVICES_H_
#define COMPRESS_WORKER_AGENT_DEVICES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "compress/v1/worker_service.pb.h"

namespace compress::worker {

// One GPU as `nvidia-smi --query-gpu=index,uuid,name,memory.total` lists it.
struct NvidiaSmiGpu {
  // nvidia-smi's index: the GPU's place in PCI bus order.
  int index = 0;
  // "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6".
  std::string uuid;
  std::string name;
  int64_t memory_bytes = 0;
};

// Parses nvidia-smi's CSV lines without header and units ("0, GPU-8932f937-..., NVIDIA H200,
// 143771", memory in MiB); a line that does not parse is skipped.
std::vector<NvidiaSmiGpu> ParseNvidiaSmiGpus(const std::vector<std::string>& lines);

// What the agent knows of the machine's GPUs.
struct GpuInventory {
  // nvidia-smi's list; empty when nvidia-smi is not on PATH, fails or lists none.
  std::vector<NvidiaSmiGpu> nvidia_smi;
  // The agent's CUDA_VISIBLE_DEVICES; nullopt when it is not set.
  std::optional<std::string> cuda_visible_devices;
  // Whether nvidia-smi was found on PATH (it may still have failed or listed no GPU).
  bool nvidia_smi_on_path = false;
};

// Runs nvidia-smi and reads CUDA_VISIBLE_DEVICES.
GpuInventory DetectGpuInventory();

// A GPU the agent may offer: its device ("cuda:N", with name and memory) and the value of
// CUDA_VISIBLE_DEVICES that shows an executor this GPU alone.
struct VisibleGpu {
  compress::v1::Device device;
  std::string cuda_visible_devices;
};

// The GPUs a CUDA program started in the agent's environment sees, as it numbers them. Without
// CUDA_VISIBLE_DEVICES: every GPU nvidia-smi lists, cuda:N being nvidia-smi's GPU N. With it:
// its comma-separated entries in order, cuda:N being the Nth, each a GPU index (in nvidia-smi's,
// that is PCI bus, order) or a GPU UUID or unique prefix of one ("GPU-8932f937"), with
// nvidia-smi's name and memory; a MIG instance ("MIG-...") is taken as it is, described by its
// name. As in CUDA, the list ends before the first entry that names no GPU nvidia-smi lists (or
// names one a second time), so an empty value means no GPU.
std::vector<VisibleGpu> VisibleGpus(const GpuInventory& inventory);

// The devices of VisibleGpus(DetectGpuInventory()); empty without nvidia-smi.
std::vector<compress::v1::Device> DetectGpus();

// --device_share=I/N: the share of the machine's GPUs one of N agents started together
// (compressd --local_workers=N) offers, so that no two of them offer the same GPU.
struct DeviceShare {
  int index = 0;
  int count = 1;
};

// Parses "I/N" with 0 <= I < N; empty is the whole (0/1). INVALID_ARGUMENT naming
// --device_share.
absl::StatusOr<DeviceShare> ParseDeviceShare(absl::string_view value);

// The GPUs of `gpus` (in VisibleGpus's order) that `share` holds: those whose position is
// I modulo N, so N agents share them out without overlap, and agent I holds one more than
// agent I+1 at most. Empty when there are fewer GPUs than I+1.
std::vector<compress::v1::Device> ShareOfGpus(const std::vector<compress::v1::Device>& gpus,
                                              DeviceShare share);

// Parses the --devices value: "auto" (the GPUs VisibleGpus offers, of them only `share`'s, or
// "cpu" when that leaves none), or a comma-separated list of "cpu" and "cuda:N"; empty is refused.
// Known GPUs get nvidia-smi's name and memory. A cuda:N that is not visible is refused: beyond
// CUDA_VISIBLE_DEVICES's entries when it is set (without nvidia-smi each entry is taken as a
// GPU), else not listed by nvidia-smi (without nvidia-smi, or when it lists none, every cuda:N). A
// share of more than one agent goes with auto only: with a list naming a GPU it is refused (every
// agent would offer that GPU), and a list of cpu alone is kept (the CPU is every agent's).
// INVALID_ARGUMENT naming the bad entry or flag.
absl::StatusOr<std::vector<compress::v1::Device>> ParseDevices(const std::string& spec,
                                                               const GpuInventory& inventory,
                                                               DeviceShare share = {});
// The same with DetectGpuInventory(), run only when `spec` asks for a GPU or for auto.
absl::StatusOr<std::vector<compress::v1::Device>> ParseDevices(const std::string& spec,
                                                               DeviceShare share = {});

// How the executor of an attempt on a device is started.
struct ExecutorDevice {
  // The executor's --device.
  std::string flag;
  // Set in the executor's environment.
  std::vector<std::pair<std::string, std::string>> environment;
};

// "cuda:N" runs the executor with --device cuda:0 and CUDA_VISIBLE_DEVICES naming that GPU alone,
// so that it can neither see nor allocate on another job's GPU: the Nth entry of
// `cuda_visible_devices` (the agent's own value) when set, else N, with
// CUDA_DEVICE_ORDER=PCI_BUS_ID (the order nvidia-smi numbers GPUs in); a cuda:N beyond the
// agent's entries (ParseDevices refuses it) hides every GPU. "cpu" hides every GPU
// (CUDA_VISIBLE_DEVICES empty). Anything else is passed as it is.
ExecutorDevice ExecutorDeviceFor(const std::string& device,
                                 const std::optional<std::string>& cuda_visible_devices);
// The same with the agent's CUDA_VISIBLE_DEVICES.
ExecutorDevice ExecutorDeviceFor(const std::string& device);

}  // namespace compress::worker

#endif  // COMPRESS_WORKER_AGENT_DEVICES_H_
