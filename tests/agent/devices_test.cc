#include "worker/agent/devices.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace compress::worker {
namespace {

TEST(DevicesTest, ParsesExplicitLists) {
  const GpuInventory two_gpus{
      ParseNvidiaSmiGpus({"0, GPU-aaaa, Fake GPU A, 1024", "1, GPU-bbbb, Fake GPU B, 2048"}),
      std::nullopt};
  absl::StatusOr<std::vector<compress::v1::Device>> devices = ParseDevices("cpu, cuda:1", two_gpus);
  ASSERT_TRUE(devices.ok()) << devices.status();
  ASSERT_EQ(devices->size(), 2u);
  EXPECT_EQ((*devices)[0].name(), "cpu");
  EXPECT_FALSE((*devices)[0].description().empty());
  EXPECT_EQ((*devices)[1].name(), "cuda:1");
}

TEST(DevicesTest, AutoFallsBackToTheCpuWithoutGpus) {
  absl::StatusOr<std::vector<compress::v1::Device>> devices = ParseDevices("auto");
  ASSERT_TRUE(devices.ok()) << devices.status();
  ASSERT_FALSE(devices->empty());
  if (DetectGpus().empty()) {
    ASSERT_EQ(devices->size(), 1u);
    EXPECT_EQ((*devices)[0].name(), "cpu");
  } else {
    EXPECT_EQ((*devices)[0].name(), "cuda:0");
    EXPECT_GT((*devices)[0].memory_bytes(), 0);
  }
}

TEST(DevicesTest, RejectsBadEntriesAndDuplicates) {
  for (const char* bad : {"gpu", "cuda:x", "cuda:-1", "cpu,cpu", ",", "", " "}) {
    absl::StatusOr<std::vector<compress::v1::Device>> devices = ParseDevices(bad);
    EXPECT_EQ(devices.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ParseDevices("").status().message(),
            "--devices: empty; expected auto, or a comma-separated list of cpu and cuda:N");
}

constexpr char kTwoGpusScript[] =
    "case \"$*\" in\n"
    "*uuid*) echo '0, GPU-aaaa1111-0000, Fake GPU A, 1024'\n"
    "        echo '1, GPU-bbbb2222-0000, Fake GPU B, 2048' ;;\n"
    "*) echo '0, Fake GPU A, 1024'; echo '1, Fake GPU B, 2048' ;;\n"
    "esac\n";

// PATH holds only a fake nvidia-smi while the object lives: by default one that lists two GPUs,
// with their UUIDs when the query asks for them; else one running `body` (a shell script), or none
// at all when `body` is nullopt.
class FakeNvidiaSmi {
 public:
  explicit FakeNvidiaSmi(std::optional<std::string> body = kTwoGpusScript) {
    dir_ = ::testing::TempDir() + "/fake_nvidia_smi_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir_);
    if (body.has_value()) {
      const std::string script = dir_ + "/nvidia-smi";
      std::ofstream(script) << "#!/bin/sh\n" << *body;
      ::chmod(script.c_str(), 0755);
    }
    const char* path = std::getenv("PATH");
    saved_path_ = path == nullptr ? "" : path;
    ::setenv("PATH", (body.has_value() ? dir_ + ":/bin:/usr/bin" : dir_).c_str(), 1);
  }
  ~FakeNvidiaSmi() {
    ::setenv("PATH", saved_path_.c_str(), 1);
    std::filesystem::remove_all(dir_);
  }

 private:
  std::string dir_;
  std::string saved_path_;
};

// Sets (or, with nullopt, unsets) an environment variable while the object lives.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name); old != nullptr) saved_ = old;
    if (value.has_value()) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (saved_.has_value()) {
      ::setenv(name_, saved_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> saved_;
};

TEST(DevicesTest, AGpuNvidiaSmiDoesNotListIsRefused) {
  FakeNvidiaSmi fake;
  ScopedEnv visible("CUDA_VISIBLE_DEVICES", std::nullopt);
  absl::StatusOr<std::vector<compress::v1::Device>> listed = ParseDevices("cuda:1,cpu");
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ((*listed)[0].description(), "Fake GPU B");
  EXPECT_EQ((*listed)[0].memory_bytes(), int64_t{2048} * 1024 * 1024);
  absl::StatusOr<std::vector<compress::v1::Device>> missing = ParseDevices("cuda:0,cuda:7");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(missing.status().message(),
            "--devices: cuda:7 is not among the GPUs nvidia-smi lists (cuda:0, cuda:1)");
}

// docs/worker.md: "a cuda:N that is not visible is refused at start". Without nvidia-smi, or with
// one that lists no GPU, no cuda:N is visible.
TEST(DevicesTest, AGpuIsRefusedWhenNoGpuIsFound) {
  ScopedEnv visible("CUDA_VISIBLE_DEVICES", std::nullopt);
  {
    FakeNvidiaSmi none(std::nullopt);
    absl::StatusOr<std::vector<compress::v1::Device>> devices = ParseDevices("cuda:0");
    EXPECT_EQ(devices.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(devices.status().message(),
              "--devices: cuda:0 is not visible: nvidia-smi is not on PATH, so this agent finds "
              "no GPU (give --devices=cpu, or auto)");
    EXPECT_FALSE(ParseDevices("cpu,cuda:1").ok());
    absl::StatusOr<std::vector<compress::v1::Device>> automatic = ParseDevices("auto");
    ASSERT_TRUE(automatic.ok()) << automatic.status();
    EXPECT_EQ((*automatic)[0].name(), "cpu");
  }
  {
    // nvidia-smi without a driver to talk to fails and lists nothing.
    FakeNvidiaSmi failing("echo 'NVIDIA-SMI has failed' >&2; exit 9\n");
    absl::StatusOr<std::vector<compress::v1::Device>> devices = ParseDevices("cuda:0");
    EXPECT_EQ(devices.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(devices.status().message(),
              "--devices: cuda:0 is not among the GPUs nvidia-smi lists (none)");
  }
  EXPECT_FALSE(ParseDevices("cuda:0", GpuInventory{}).ok());
}

using Environment = std::vector<std::pair<std::string, std::string>>;

TEST(DevicesTest, ExecutorOfAGpuSeesOnlyThatGpu) {
  ScopedEnv visible("CUDA_VISIBLE_DEVICES", std::nullopt);
  ExecutorDevice gpu = ExecutorDeviceFor("cuda:3");
  EXPECT_EQ(gpu.flag, "cuda:0");
  EXPECT_EQ(gpu.environment,
            (Environment{{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}, {"CUDA_VISIBLE_DEVICES", "3"}}));

  ExecutorDevice cpu = ExecutorDeviceFor("cpu");
  EXPECT_EQ(cpu.flag, "cpu");
  EXPECT_EQ(cpu.environment, (Environment{{"CUDA_VISIBLE_DEVICES", ""}}));

  ExecutorDevice other = ExecutorDeviceFor("cuda");
  EXPECT_EQ(other.flag, "cuda");
  EXPECT_TRUE(other.environment.empty());
}

// An agent a batch scheduler confined with CUDA_VISIBLE_DEVICES (and no cgroup) offers only that
// GPU, under CUDA's number, and its executors run on it, not on the GPU of that number.
TEST(DevicesTest, AnInheritedCudaVisibleDevicesConfinesTheAgent) {
  FakeNvidiaSmi fake;
  ScopedEnv visible("CUDA_VISIBLE_DEVICES", "1");
  absl::StatusOr<std::vector<compress::v1::Device>> devices = ParseDevices("auto");
  ASSERT_TRUE(devices.ok()) << devices.status();
  ASSERT_EQ(devices->size(), 1u);
  EXPECT_EQ((*devices)[0].name(), "cuda:0");
  EXPECT_EQ((*devices)[0].description(), "Fake GPU B");
  EXPECT_EQ((*devices)[0].memory_bytes(), int64_t{2048} * 1024 * 1024);
  EXPECT_EQ(ExecutorDeviceFor("cuda:0").environment,
            (Environment{{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}, {"CUDA_VISIBLE_DEVICES", "1"}}));

  absl::StatusOr<std::vector<compress::v1::Device>> outside = ParseDevices("cuda:1");
  EXPECT_EQ(outside.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(outside.status().message(),
            "--devices: cuda:1 is not among the GPUs CUDA_VISIBLE_DEVICES=\"1\" makes visible "
            "(cuda:0); with CUDA_VISIBLE_DEVICES set, cuda:N is its Nth GPU");

  ScopedEnv none("CUDA_VISIBLE_DEVICES", "");
  devices = ParseDevices("auto");
  ASSERT_TRUE(devices.ok()) << devices.status();
  ASSERT_EQ(devices->size(), 1u);
  EXPECT_EQ((*devices)[0].name(), "cpu");
}

const std::vector<std::string> kNvidiaSmiLines = {
    "0, GPU-aaaa1111-0000-0000-0000-000000000000, NVIDIA H200, 143771\n",
    "1, GPU-bbbb2222-0000-0000-0000-000000000000, NVIDIA A100-SXM4-80GB, 81920\n",
    "2, GPU-bbbb3333-0000-0000-0000-000000000000, NVIDIA L4, [N/A]\n"};

TEST(DevicesTest, ParsesNvidiaSmiLines) {
  std::vector<std::string> lines = kNvidiaSmiLines;
  lines.push_back("3, GPU-cccc, Some, Name, With, Commas, 1024");
  lines.push_back("x, GPU-dddd, Bad Index, 1024");
  lines.push_back("4, NVIDIA without UUID, 1024");
  lines.push_back("");
  std::vector<NvidiaSmiGpu> gpus = ParseNvidiaSmiGpus(lines);
  ASSERT_EQ(gpus.size(), 4u);
  EXPECT_EQ(gpus[0].index, 0);
  EXPECT_EQ(gpus[0].uuid, "GPU-aaaa1111-0000-0000-0000-000000000000");
  EXPECT_EQ(gpus[0].name, "NVIDIA H200");
  EXPECT_EQ(gpus[0].memory_bytes, int64_t{143771} * 1024 * 1024);
  EXPECT_EQ(gpus[2].memory_bytes, 0);
  EXPECT_EQ(gpus[3].name, "Some, Name, With, Commas");
}

// "name=description/CUDA_VISIBLE_DEVICES of the executor" for each visible GPU.
std::vector<std::string> Describe(const std::vector<VisibleGpu>& gpus) {
  std::vector<std::string> described;
  for (const VisibleGpu& gpu : gpus) {
    described.push_back(absl::StrCat(gpu.device.name(), "=", gpu.device.description(), "/",
                                     gpu.cuda_visible_devices));
  }
  return described;
}

TEST(DevicesTest, VisibleGpusFollowCudaVisibleDevices) {
  using ::testing::ElementsAre;
  using ::testing::IsEmpty;
  GpuInventory inventory{ParseNvidiaSmiGpus(kNvidiaSmiLines), std::nullopt};
  EXPECT_THAT(
      Describe(VisibleGpus(inventory)),
      ElementsAre("cuda:0=NVIDIA H200/0", "cuda:1=NVIDIA A100-SXM4-80GB/1", "cuda:2=NVIDIA L4/2"));

  inventory.cuda_visible_devices = "2";
  EXPECT_THAT(Describe(VisibleGpus(inventory)), ElementsAre("cuda:0=NVIDIA L4/2"));
  // In the variable's order; UUIDs and unique UUID prefixes; spaces around entries.
  inventory.cuda_visible_devices = " 2, GPU-aaaa1111-0000-0000-0000-000000000000 ,GPU-bbbb2";
  EXPECT_THAT(Describe(VisibleGpus(inventory)),
              ElementsAre("cuda:0=NVIDIA L4/2",
                          "cuda:1=NVIDIA H200/GPU-aaaa1111-0000-0000-0000-000000000000",
                          "cuda:2=NVIDIA A100-SXM4-80GB/GPU-bbbb2"));
  // As in CUDA, the list ends at an entry naming no GPU: an unknown index, an ambiguous or
  // unknown UUID, anything else, or a GPU named before.
  for (const char* value :
       {"1,7,0", "1,GPU-bbbb,0", "1,GPU-ffff,0", "1,-1,0", "1,,0", "1,1,0", "1,GPU-bbbb2222,0"}) {
    inventory.cuda_visible_devices = value;
    EXPECT_THAT(Describe(VisibleGpus(inventory)), ElementsAre("cuda:0=NVIDIA A100-SXM4-80GB/1"))
        << value;
  }
  for (const char* value : {"", " ", "NoDevFiles", "-1", "3"}) {
    inventory.cuda_visible_devices = value;
    EXPECT_THAT(Describe(VisibleGpus(inventory)), IsEmpty()) << value;
  }
  // nvidia-smi does not list MIG instances: taken as they are.
  inventory.cuda_visible_devices = "MIG-1234abcd";
  EXPECT_THAT(Describe(VisibleGpus(inventory)), ElementsAre("cuda:0=MIG-1234abcd/MIG-1234abcd"));
  // Without nvidia-smi no GPU is known.
  EXPECT_THAT(Describe(VisibleGpus(GpuInventory{{}, "0,1"})), IsEmpty());
}

TEST(DevicesTest, DeviceNamesFollowCudaVisibleDevices) {
  const GpuInventory inventory{ParseNvidiaSmiGpus(kNvidiaSmiLines), "2,0"};
  absl::StatusOr<std::vector<compress::v1::Device>> automatic = ParseDevices("auto", inventory);
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  ASSERT_EQ(automatic->size(), 2u);
  EXPECT_EQ((*automatic)[0].name(), "cuda:0");
  EXPECT_EQ((*automatic)[0].description(), "NVIDIA L4");
  EXPECT_EQ((*automatic)[1].name(), "cuda:1");
  EXPECT_EQ((*automatic)[1].description(), "NVIDIA H200");
  EXPECT_EQ((*automatic)[1].memory_bytes(), int64_t{143771} * 1024 * 1024);

  absl::StatusOr<std::vector<compress::v1::Device>> listed = ParseDevices("cuda:1,cpu", inventory);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ((*listed)[0].name(), "cuda:1");
  EXPECT_EQ((*listed)[0].description(), "NVIDIA H200");

  absl::StatusOr<std::vector<compress::v1::Device>> beyond = ParseDevices("cuda:2", inventory);
  EXPECT_EQ(beyond.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(beyond.status().message(),
            "--devices: cuda:2 is not among the GPUs CUDA_VISIBLE_DEVICES=\"2,0\" makes visible "
            "(cuda:0, cuda:1); with CUDA_VISIBLE_DEVICES set, cuda:N is its Nth GPU");

  // Empty: no GPU; auto offers the CPU.
  const GpuInventory hidden{ParseNvidiaSmiGpus(kNvidiaSmiLines), ""};
  absl::StatusOr<std::vector<compress::v1::Device>> cpu = ParseDevices("auto", hidden);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  ASSERT_EQ(cpu->size(), 1u);
  EXPECT_EQ((*cpu)[0].name(), "cpu");
  EXPECT_THAT(std::string(ParseDevices("cuda:0", hidden).status().message()),
              ::testing::HasSubstr("CUDA_VISIBLE_DEVICES=\"\" makes visible (none)"));

  // Without nvidia-smi the entries are counted, not checked.
  const GpuInventory unknown{{}, "5,GPU-x"};
  EXPECT_TRUE(ParseDevices("cuda:1", unknown).ok());
  EXPECT_EQ(ParseDevices("cuda:2", unknown).status().message(),
            "--devices: cuda:2 is not among the GPUs CUDA_VISIBLE_DEVICES=\"5,GPU-x\" makes "
            "visible (2 entries); with CUDA_VISIBLE_DEVICES set, cuda:N is its Nth GPU");
  absl::StatusOr<std::vector<compress::v1::Device>> fallback = ParseDevices("auto", unknown);
  ASSERT_TRUE(fallback.ok()) << fallback.status();
  EXPECT_EQ((*fallback)[0].name(), "cpu");
}

TEST(DevicesTest, ExecutorGetsTheCudaVisibleDevicesEntry) {
  auto visible_of = [](const std::string& device, std::optional<std::string> agent) {
    ExecutorDevice executor = ExecutorDeviceFor(device, agent);
    EXPECT_EQ(executor.flag, "cuda:0");
    EXPECT_EQ(executor.environment[0],
              (std::pair<std::string, std::string>{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}));
    return executor.environment[1].second;
  };
  EXPECT_EQ(visible_of("cuda:3", std::nullopt), "3");
  EXPECT_EQ(visible_of("cuda:0", "2"), "2");
  EXPECT_EQ(visible_of("cuda:1", "2, GPU-aaaa1111"), "GPU-aaaa1111");
  // Beyond the agent's entries (ParseDevices refuses it): no GPU rather than another's.
  EXPECT_EQ(visible_of("cuda:2", "2,3"), "");
  EXPECT_EQ(visible_of("cuda:0", ""), "");
  EXPECT_EQ(ExecutorDeviceFor("cpu", "2").environment, (Environment{{"CUDA_VISIBLE_DEVICES", ""}}));
}

std::vector<std::string> Names(const std::vector<compress::v1::Device>& devices) {
  std::vector<std::string> names;
  for (const compress::v1::Device& device : devices) names.push_back(device.name());
  return names;
}

std::vector<compress::v1::Device> Gpus(int count) {
  std::vector<compress::v1::Device> gpus(count);
  for (int i = 0; i < count; ++i) gpus[i].set_name(absl::StrCat("cuda:", i));
  return gpus;
}

TEST(DevicesTest, SharesOfGpusAreDisjointAndCoverAll) {
  using ::testing::ElementsAre;
  using ::testing::IsEmpty;
  EXPECT_THAT(Names(ShareOfGpus(Gpus(5), {0, 2})), ElementsAre("cuda:0", "cuda:2", "cuda:4"));
  EXPECT_THAT(Names(ShareOfGpus(Gpus(5), {1, 2})), ElementsAre("cuda:1", "cuda:3"));
  EXPECT_THAT(Names(ShareOfGpus(Gpus(5), {0, 1})),
              ElementsAre("cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:4"));
  EXPECT_THAT(Names(ShareOfGpus(Gpus(8), {3, 4})), ElementsAre("cuda:3", "cuda:7"));
  EXPECT_THAT(Names(ShareOfGpus(Gpus(2), {2, 3})), IsEmpty());
  EXPECT_THAT(Names(ShareOfGpus(Gpus(0), {0, 2})), IsEmpty());
  for (int gpus = 0; gpus <= 9; ++gpus) {
    for (int count = 1; count <= 4; ++count) {
      std::vector<std::string> all;
      for (int index = 0; index < count; ++index) {
        for (const std::string& name : Names(ShareOfGpus(Gpus(gpus), {index, count}))) {
          all.push_back(name);
        }
      }
      std::sort(all.begin(), all.end());
      std::vector<std::string> expected = Names(Gpus(gpus));
      std::sort(expected.begin(), expected.end());
      EXPECT_EQ(all, expected) << gpus << " GPUs, " << count << " agents";
    }
  }
}

TEST(DevicesTest, ParsesDeviceShares) {
  for (const auto& [value, index, count] : {std::tuple<const char*, int, int>{"", 0, 1},
                                            {"0/1", 0, 1},
                                            {"1/2", 1, 2},
                                            {" 3/4 ", 3, 4}}) {
    absl::StatusOr<DeviceShare> share = ParseDeviceShare(value);
    ASSERT_TRUE(share.ok()) << value << ": " << share.status();
    EXPECT_EQ(share->index, index) << value;
    EXPECT_EQ(share->count, count) << value;
  }
  for (const char* bad : {"1", "2/2", "-1/2", "1/0", "a/b", "1/2/3", "1/", "/2"}) {
    absl::StatusOr<DeviceShare> share = ParseDeviceShare(bad);
    EXPECT_EQ(share.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(share.status().message(),
              absl::StrCat("--device_share: expected I/N with 0 <= I < N (agent I of N), got \"",
                           bad, "\""));
  }
}

TEST(DevicesTest, AutoOffersOnlyItsShareOfTheGpus) {
  const GpuInventory three{ParseNvidiaSmiGpus(kNvidiaSmiLines), std::nullopt};
  absl::StatusOr<std::vector<compress::v1::Device>> first = ParseDevices("auto", three, {0, 2});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_THAT(Names(*first), ::testing::ElementsAre("cuda:0", "cuda:2"));
  EXPECT_EQ((*first)[1].description(), "NVIDIA L4");
  absl::StatusOr<std::vector<compress::v1::Device>> second = ParseDevices("auto", three, {1, 2});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_THAT(Names(*second), ::testing::ElementsAre("cuda:1"));

  // Shared out in CUDA_VISIBLE_DEVICES's numbering.
  const GpuInventory confined{ParseNvidiaSmiGpus(kNvidiaSmiLines), "2,0"};
  absl::StatusOr<std::vector<compress::v1::Device>> visible =
      ParseDevices("auto", confined, {1, 2});
  ASSERT_TRUE(visible.ok()) << visible.status();
  EXPECT_THAT(Names(*visible), ::testing::ElementsAre("cuda:1"));
  EXPECT_EQ((*visible)[0].description(), "NVIDIA H200");

  // A share without a GPU offers the CPU, as auto does without GPUs.
  absl::StatusOr<std::vector<compress::v1::Device>> none = ParseDevices("auto", three, {3, 4});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_THAT(Names(*none), ::testing::ElementsAre("cpu"));

  // An explicit list: cpu alone is every agent's; a GPU would be offered by every agent.
  absl::StatusOr<std::vector<compress::v1::Device>> cpu = ParseDevices("cpu", three, {1, 2});
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_THAT(Names(*cpu), ::testing::ElementsAre("cpu"));
  absl::StatusOr<std::vector<compress::v1::Device>> named =
      ParseDevices("cpu,cuda:1", three, {1, 2});
  EXPECT_EQ(named.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(named.status().message(),
            "--device_share=1/2 shares the GPUs of --devices=auto; --devices=cpu,cuda:1 names its "
            "own, which every agent of the share would offer");
  EXPECT_TRUE(ParseDevices("cuda:1", three, {0, 1}).ok());
}

}  // namespace
}  // namespace compress::worker
