#include "worker/agent/devices.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace compress::worker {
namespace {

bool OnPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", program);
    if (access(candidate.c_str(), X_OK) == 0) return true;
  }
  return false;
}

std::string CpuDescription() {
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  return absl::StrCat(cores > 0 ? cores : 1, " CPU cores");
}

// The entries of a CUDA_VISIBLE_DEVICES value, trimmed; none for an empty value.
std::vector<std::string> CudaVisibleEntries(absl::string_view value) {
  std::vector<std::string> entries;
  if (absl::StripAsciiWhitespace(value).empty()) return entries;
  for (absl::string_view entry : absl::StrSplit(value, ',')) {
    entries.emplace_back(absl::StripAsciiWhitespace(entry));
  }
  return entries;
}

// The GPU a CUDA_VISIBLE_DEVICES entry names: an index, or a UUID or the prefix of exactly one.
const NvidiaSmiGpu* FindGpu(const std::vector<NvidiaSmiGpu>& gpus, absl::string_view entry) {
  int index = -1;
  if (absl::SimpleAtoi(entry, &index)) {
    for (const NvidiaSmiGpu& gpu : gpus) {
      if (gpu.index == index) return &gpu;
    }
    return nullptr;
  }
  if (!absl::StartsWith(entry, "GPU-")) return nullptr;
  const NvidiaSmiGpu* found = nullptr;
  for (const NvidiaSmiGpu& gpu : gpus) {
    if (!absl::StartsWith(gpu.uuid, entry)) continue;
    if (found != nullptr) return nullptr;  // ambiguous: CUDA refuses it too
    found = &gpu;
  }
  return found;
}

compress::v1::Device Describe(const NvidiaSmiGpu& gpu, size_t cuda_index) {
  compress::v1::Device device;
  device.set_name(absl::StrCat("cuda:", cuda_index));
  device.set_description(gpu.name);
  device.set_memory_bytes(gpu.memory_bytes);
  return device;
}

std::string DeviceNames(const std::vector<VisibleGpu>& gpus) {
  std::vector<std::string> names;
  for (const VisibleGpu& gpu : gpus) names.push_back(gpu.device.name());
  return names.empty() ? "none" : absl::StrJoin(names, ", ");
}

}  // namespace

std::vector<NvidiaSmiGpu> ParseNvidiaSmiGpus(const std::vector<std::string>& lines) {
  std::vector<NvidiaSmiGpu> gpus;
  for (const std::string& line : lines) {
    // "0, GPU-8932f937-d72c-4106-c12f-20bd9faed9f6, NVIDIA H200, 143771": the name between the
    // UUID and the memory may hold commas of its own.
    std::vector<absl::string_view> fields = absl::StrSplit(line, ',');
    if (fields.size() < 4) continue;
    NvidiaSmiGpu gpu;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(fields.front()), &gpu.index) ||
        gpu.index < 0) {
      continue;
    }
    gpu.uuid = std::string(absl::StripAsciiWhitespace(fields[1]));
    gpu.name = std::string(
        absl::StripAsciiWhitespace(absl::StrJoin(fields.begin() + 2, fields.end() - 1, ",")));
    int64_t memory_mib = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(fields.back()), &memory_mib)) memory_mib = 0;
    gpu.memory_bytes = memory_mib * 1024 * 1024;
    gpus.push_back(std::move(gpu));
  }
  return gpus;
}

GpuInventory DetectGpuInventory() {
  GpuInventory inventory;
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES"); visible != nullptr) {
    inventory.cuda_visible_devices = visible;
  }
  inventory.nvidia_smi_on_path = OnPath("nvidia-smi");
  if (!inventory.nvidia_smi_on_path) return inventory;
  // nvidia-smi ignores CUDA_VISIBLE_DEVICES: it lists every GPU, in PCI bus order.
  std::FILE* pipe = popen(
      "nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits "
      "2>/dev/null",
      "r");
  if (pipe == nullptr) return inventory;
  std::vector<std::string> lines;
  char line[512];
  while (std::fgets(line, sizeof(line), pipe) != nullptr) lines.emplace_back(line);
  pclose(pipe);
  inventory.nvidia_smi = ParseNvidiaSmiGpus(lines);
  return inventory;
}

std::vector<VisibleGpu> VisibleGpus(const GpuInventory& inventory) {
  std::vector<VisibleGpu> visible;
  if (!inventory.cuda_visible_devices.has_value()) {
    for (const NvidiaSmiGpu& gpu : inventory.nvidia_smi) {
      visible.push_back({Describe(gpu, gpu.index), absl::StrCat(gpu.index)});
    }
    return visible;
  }
  if (inventory.nvidia_smi.empty()) return visible;
  std::set<std::string> seen;
  for (const std::string& entry : CudaVisibleEntries(*inventory.cuda_visible_devices)) {
    VisibleGpu gpu;
    std::string key;
    if (absl::StartsWith(entry, "MIG-")) {
      // nvidia-smi's GPU list does not show MIG instances; CUDA takes the name as it is.
      key = entry;
      gpu.device.set_name(absl::StrCat("cuda:", visible.size()));
      gpu.device.set_description(entry);
    } else if (const NvidiaSmiGpu* listed = FindGpu(inventory.nvidia_smi, entry)) {
      key = absl::StrCat(listed->index);
      gpu.device = Describe(*listed, visible.size());
    } else {
      break;
    }
    if (!seen.insert(key).second) break;
    gpu.cuda_visible_devices = entry;
    visible.push_back(std::move(gpu));
  }
  return visible;
}

std::vector<compress::v1::Device> DetectGpus() {
  std::vector<compress::v1::Device> devices;
  for (VisibleGpu& gpu : VisibleGpus(DetectGpuInventory())) devices.push_back(gpu.device);
  return devices;
}

absl::StatusOr<DeviceShare> ParseDeviceShare(absl::string_view value) {
  value = absl::StripAsciiWhitespace(value);
  if (value.empty()) return DeviceShare();
  std::vector<absl::string_view> parts = absl::StrSplit(value, '/');
  DeviceShare share;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &share.index) ||
      !absl::SimpleAtoi(parts[1], &share.count) || share.index < 0 || share.count < 1 ||
      share.index >= share.count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--device_share: expected I/N with 0 <= I < N (agent I of N), got \"", value, "\""));
  }
  return share;
}

std::vector<compress::v1::Device> ShareOfGpus(const std::vector<compress::v1::Device>& gpus,
                                              DeviceShare share) {
  std::vector<compress::v1::Device> held;
  if (share.count < 1) return gpus;
  for (size_t i = 0; i < gpus.size(); ++i) {
    if (static_cast<int>(i % share.count) == share.index) held.push_back(gpus[i]);
  }
  return held;
}

absl::StatusOr<std::vector<compress::v1::Device>> ParseDevices(const std::string& spec,
                                                               const GpuInventory& inventory,
                                                               DeviceShare share) {
  const std::vector<VisibleGpu> visible = VisibleGpus(inventory);
  std::vector<compress::v1::Device> devices;
  std::string trimmed(absl::StripAsciiWhitespace(spec));
  if (trimmed.empty()) {
    return absl::InvalidArgumentError(
        "--devices: empty; expected auto, or a comma-separated list of cpu and cuda:N");
  }
  if (trimmed == "auto") {
    std::vector<compress::v1::Device> gpus;
    for (const VisibleGpu& gpu : visible) gpus.push_back(gpu.device);
    devices = ShareOfGpus(gpus, share);
    // A share without a GPU offers the CPU, as auto does on a machine without GPUs: an agent
    // must offer a device, and one that exited instead would be restarted again and again.
    if (!devices.empty()) return devices;
    trimmed = "cpu";
  }
  std::set<std::string> seen;
  for (absl::string_view entry : absl::StrSplit(trimmed, ',', absl::SkipWhitespace())) {
    entry = absl::StripAsciiWhitespace(entry);
    compress::v1::Device device;
    if (entry == "cpu") {
      device.set_name("cpu");
      device.set_description(CpuDescription());
    } else if (absl::ConsumePrefix(&entry, "cuda:")) {
      int index = -1;
      if (!absl::SimpleAtoi(entry, &index) || index < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("--devices: bad entry \"cuda:", entry, "\", expected cuda:N"));
      }
      device.set_name(absl::StrCat("cuda:", index));
      if (inventory.cuda_visible_devices.has_value()) {
        // cuda:N is the Nth GPU CUDA_VISIBLE_DEVICES makes visible; without nvidia-smi its
        // entries cannot be checked, and each is taken.
        const size_t count = inventory.nvidia_smi.empty()
                                 ? CudaVisibleEntries(*inventory.cuda_visible_devices).size()
                                 : visible.size();
        if (static_cast<size_t>(index) >= count) {
          return absl::InvalidArgumentError(absl::StrCat(
              "--devices: ", device.name(), " is not among the GPUs CUDA_VISIBLE_DEVICES=\"",
              *inventory.cuda_visible_devices, "\" makes visible (",
              inventory.nvidia_smi.empty() ? absl::StrCat(count, count == 1 ? " entry" : " entries")
                                           : DeviceNames(visible),
              "); with CUDA_VISIBLE_DEVICES set, cuda:N is its Nth GPU"));
        }
        if (!visible.empty()) device = visible[index].device;
      } else {
        bool listed = false;
        for (const VisibleGpu& gpu : visible) {
          if (gpu.device.name() == device.name()) {
            device = gpu.device;
            listed = true;
          }
        }
        // A GPU nvidia-smi does not list (or any, without nvidia-smi) would fail every job this
        // agent leases for it.
        if (!listed && !inventory.nvidia_smi_on_path && inventory.nvidia_smi.empty()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "--devices: ", device.name(),
              " is not visible: nvidia-smi is not on PATH, so this agent finds no GPU (give "
              "--devices=cpu, or auto)"));
        }
        if (!listed) {
          return absl::InvalidArgumentError(
              absl::StrCat("--devices: ", device.name(),
                           " is not among the GPUs nvidia-smi lists (", DeviceNames(visible), ")"));
        }
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--devices: bad entry \"", entry, "\", expected auto, cpu or cuda:N"));
    }
    if (!seen.insert(device.name()).second) {
      return absl::InvalidArgumentError(absl::StrCat("--devices: ", device.name(), " given twice"));
    }
    devices.push_back(device);
  }
  if (devices.empty()) return absl::InvalidArgumentError("--devices: no device given");
  if (share.count > 1) {
    for (const compress::v1::Device& device : devices) {
      if (device.name() == "cpu") continue;
      return absl::InvalidArgumentError(absl::StrCat(
          "--device_share=", share.index, "/", share.count, " shares the GPUs of --devices=auto; ",
          "--devices=", trimmed, " names its own, which every agent of the share would offer"));
    }
  }
  return devices;
}

absl::StatusOr<std::vector<compress::v1::Device>> ParseDevices(const std::string& spec,
                                                               DeviceShare share) {
  const absl::string_view trimmed = absl::StripAsciiWhitespace(spec);
  const bool needs_gpus = trimmed == "auto" || absl::StrContains(trimmed, "cuda");
  return ParseDevices(spec, needs_gpus ? DetectGpuInventory() : GpuInventory(), share);
}

ExecutorDevice ExecutorDeviceFor(const std::string& device,
                                 const std::optional<std::string>& cuda_visible_devices) {
  ExecutorDevice executor{device, {}};
  absl::string_view index = device;
  int number = 0;
  if (absl::ConsumePrefix(&index, "cuda:") && absl::SimpleAtoi(index, &number) && number >= 0) {
    std::string visible(index);
    if (cuda_visible_devices.has_value()) {
      std::vector<std::string> entries = CudaVisibleEntries(*cuda_visible_devices);
      visible = static_cast<size_t>(number) < entries.size() ? entries[number] : "";
    }
    executor.flag = "cuda:0";
    executor.environment = {{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}, {"CUDA_VISIBLE_DEVICES", visible}};
  } else if (device == "cpu") {
    executor.environment = {{"CUDA_VISIBLE_DEVICES", ""}};
  }
  return executor;
}

ExecutorDevice ExecutorDeviceFor(const std::string& device) {
  std::optional<std::string> visible;
  if (const char* value = std::getenv("CUDA_VISIBLE_DEVICES"); value != nullptr) visible = value;
  return ExecutorDeviceFor(device, visible);
}

}  // namespace compress::worker
