#include "worker/agent/devices.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
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

}  // namespace

std::vector<compress::v1::Device> DetectGpus() {
  std::vector<compress::v1::Device> gpus;
  if (!OnPath("nvidia-smi")) return gpus;
  std::FILE* pipe = popen(
      "nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits 2>/dev/null",
      "r");
  if (pipe == nullptr) return gpus;
  char line[512];
  while (std::fgets(line, sizeof(line), pipe) != nullptr) {
    // "0, NVIDIA H200, 143771" (memory in MiB).
    std::vector<std::string> fields = absl::StrSplit(line, ',');
    if (fields.size() != 3) continue;
    int index = 0;
    int64_t memory_mib = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(fields[0]), &index)) continue;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(fields[2]), &memory_mib)) memory_mib = 0;
    compress::v1::Device device;
    device.set_name(absl::StrCat("cuda:", index));
    device.set_description(std::string(absl::StripAsciiWhitespace(fields[1])));
    device.set_memory_bytes(memory_mib * 1024 * 1024);
    gpus.push_back(device);
  }
  pclose(pipe);
  return gpus;
}

absl::StatusOr<std::vector<compress::v1::Device>> ParseDevices(const std::string& spec) {
  std::vector<compress::v1::Device> devices;
  std::string trimmed(absl::StripAsciiWhitespace(spec));
  if (trimmed.empty() || trimmed == "auto") {
    devices = DetectGpus();
    if (devices.empty())
      trimmed = "cpu";
    else
      return devices;
  }
  std::vector<compress::v1::Device> gpus;
  bool gpus_detected = false;
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
      if (!gpus_detected) {
        gpus = DetectGpus();
        gpus_detected = true;
      }
      bool listed = false;
      for (const compress::v1::Device& gpu : gpus) {
        if (gpu.name() == device.name()) {
          device = gpu;
          listed = true;
        }
      }
      // Without nvidia-smi nothing is known; with it, a GPU it does not list would fail every job
      // this agent leases for it.
      if (!listed && !gpus.empty()) {
        std::vector<std::string> names;
        for (const compress::v1::Device& gpu : gpus) names.push_back(gpu.name());
        return absl::InvalidArgumentError(absl::StrCat("--devices: ", device.name(),
                                                       " is not among the GPUs nvidia-smi lists (",
                                                       absl::StrJoin(names, ", "), ")"));
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
  return devices;
}

ExecutorDevice ExecutorDeviceFor(const std::string& device) {
  ExecutorDevice executor{device, {}};
  absl::string_view index = device;
  int number = 0;
  if (absl::ConsumePrefix(&index, "cuda:") && absl::SimpleAtoi(index, &number) && number >= 0) {
    executor.flag = "cuda:0";
    executor.environment = {{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"},
                            {"CUDA_VISIBLE_DEVICES", std::string(index)}};
  } else if (device == "cpu") {
    executor.environment = {{"CUDA_VISIBLE_DEVICES", ""}};
  }
  return executor;
}

}  // namespace compress::worker
