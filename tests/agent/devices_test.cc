#include "worker/agent/devices.h"

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
