#include "worker/agent/devices.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace compress::worker {
namespace {

TEST(DevicesTest, ParsesExplicitLists) {
  absl::StatusOr<std::vector<compress::v1::Device>> devices = ParseDevices("cpu, cuda:1");
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
  for (const char* bad : {"gpu", "cuda:x", "cuda:-1", "cpu,cpu", ","}) {
    absl::StatusOr<std::vector<compress::v1::Device>> devices = ParseDevices(bad);
    EXPECT_EQ(devices.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

// PATH holds only a fake nvidia-smi that lists two GPUs while the object lives.
class FakeNvidiaSmi {
 public:
  FakeNvidiaSmi() {
    dir_ = ::testing::TempDir() + "/fake_nvidia_smi_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir_);
    const std::string script = dir_ + "/nvidia-smi";
    std::ofstream(script) << "#!/bin/sh\necho '0, Fake GPU A, 1024'\necho '1, Fake GPU B, 2048'\n";
    ::chmod(script.c_str(), 0755);
    const char* path = std::getenv("PATH");
    saved_path_ = path == nullptr ? "" : path;
    ::setenv("PATH", (dir_ + ":/bin:/usr/bin").c_str(), 1);
  }
  ~FakeNvidiaSmi() {
    ::setenv("PATH", saved_path_.c_str(), 1);
    std::filesystem::remove_all(dir_);
  }

 private:
  std::string dir_;
  std::string saved_path_;
};

TEST(DevicesTest, AGpuNvidiaSmiDoesNotListIsRefused) {
  FakeNvidiaSmi fake;
  absl::StatusOr<std::vector<compress::v1::Device>> listed = ParseDevices("cuda:1,cpu");
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ((*listed)[0].description(), "Fake GPU B");
  EXPECT_EQ((*listed)[0].memory_bytes(), int64_t{2048} * 1024 * 1024);
  absl::StatusOr<std::vector<compress::v1::Device>> missing = ParseDevices("cuda:0,cuda:7");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(missing.status().message(),
            "--devices: cuda:7 is not among the GPUs nvidia-smi lists (cuda:0, cuda:1)");
}

using Environment = std::vector<std::pair<std::string, std::string>>;

TEST(DevicesTest, ExecutorOfAGpuSeesOnlyThatGpu) {
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

}  // namespace
}  // namespace compress::worker
