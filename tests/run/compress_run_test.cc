// compress-run as a process: the event stream and exit status of the executor contract
// (docs/executor-contract.md), resume on the same work directory, cancellation by SIGTERM.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/events/event.h"
#include "worker/events/sha256.h"
#include "worker/pipeline/checkpoint/model_io.h"
#include "worker/pipeline/data/dataset.h"
#include "worker/pipeline/model/swin.h"
#include "worker/pipeline/model/swin_config.h"
#include "worker/pipeline/model/torch_error.h"
#include "worker/run/stage_model.h"

namespace compress::run {
namespace {

namespace fs = std::filesystem;
using events::Event;
using events::EventType;

struct RunResult {
  std::vector<Event> events;
  int exit_code = -1;  // exit status, or 128 + signal
};

// A tiny model on synthetic data: runs in seconds on one core.
nlohmann::json TinySpec() {
  return nlohmann::json::parse(R"({
    "model": {"config": {"image_size": 16, "in_channels": 1, "patch_size": 2, "embed_dim": 16,
              "depths": [2, 2], "num_heads": [2, 4], "window_size": 4}},
    "dataset": {"format": "synthetic", "synthetic_train": 256, "synthetic_val": 64,
                "synthetic_classes": 4},
    "teacher": {"train": {"epochs": 8, "batch_size": 16, "lr": 0.005}},
    "resources": {"device": "cpu", "threads": 1, "seed": 7}
  })");
}

// TinySpec with every stage on: share, prune to 32% fewer MACs than the teacher, distill.
nlohmann::json FullSpec() {
  nlohmann::json spec = TinySpec();
  spec.merge_patch(nlohmann::json::parse(R"({
    "share": {"enabled": true, "train": {"epochs": 2, "batch_size": 16, "lr": 0.002}},
    "prune": {"enabled": true, "target_macs_reduction": 0.32, "importance": "taylor",
              "round_to": 4, "calibration_batches": 4},
    "distill": {"enabled": true, "train": {"epochs": 3, "batch_size": 16, "lr": 0.002}}
  })"));
  return spec;
}

std::string FreshDir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/compress_run_test_" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string WriteSpec(const std::string& dir, const nlohmann::json& spec) {
  std::string path = dir + "/spec-in.json";
  std::ofstream(path) << spec.dump();
  return path;
}

// How RunExecutor stops the executor once `terminate_after_metrics` metric events were read.
enum class Stop { kSigterm, kCloseStdout };

// Runs compress-run with `args`; when `terminate_after_metrics` > 0, sends SIGTERM (or, with
// Stop::kCloseStdout, stops reading and closes its end of the pipe, as a crashed agent's does)
// once that many metric events (of `terminate_phase`, when not empty) have been read.
RunResult RunExecutor(const std::vector<std::string>& args, int terminate_after_metrics = 0,
                      const std::string& terminate_phase = "", Stop stop = Stop::kSigterm) {
  int pipe_fds[2];
  EXPECT_EQ(pipe(pipe_fds), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipe_fds[1], STDOUT_FILENO);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    std::vector<char*> argv;
    std::string binary = COMPRESS_RUN_BINARY;
    argv.push_back(binary.data());
    std::vector<std::string> copy = args;
    for (std::string& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  close(pipe_fds[1]);
  RunResult result;
  std::FILE* out = fdopen(pipe_fds[0], "r");
  char* line = nullptr;
  size_t capacity = 0;
  int metrics = 0;
  while (getline(&line, &capacity, out) > 0) {
    auto event = events::Parse(line);
    EXPECT_TRUE(event.ok()) << "stdout line is not an event: " << line;
    if (!event.ok()) continue;
    result.events.push_back(*event);
    if (event->type == EventType::kMetric &&
        (terminate_phase.empty() || event->phase == terminate_phase) &&
        ++metrics == terminate_after_metrics) {
      if (stop == Stop::kCloseStdout) break;
      kill(pid, SIGTERM);
    }
  }
  free(line);
  fclose(out);
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::vector<Event> OfType(const RunResult& r, EventType type) {
  std::vector<Event> out;
  for (const Event& e : r.events) {
    if (e.type == type) out.push_back(e);
  }
  return out;
}

TEST(CompressRunTest, TinyJobSucceedsWithArtifactsAndReport) {
  const std::string dir = FreshDir("tiny");
  RunResult r = RunExecutor({"--spec", WriteSpec(dir, TinySpec()), "--workdir", dir + "/work"});
  ASSERT_EQ(r.exit_code, 0);
  ASSERT_FALSE(r.events.empty());
  EXPECT_EQ(r.events.back().type, EventType::kReport);
  auto started = OfType(r, EventType::kPhaseStarted);
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(started[0].phase, "teacher");
  EXPECT_FALSE(OfType(r, EventType::kMetric).empty());
  auto artifacts = OfType(r, EventType::kArtifact);
  ASSERT_EQ(artifacts.size(), 3u);
  for (const Event& a : artifacts) {
    auto digest = Sha256File(a.path);
    ASSERT_TRUE(digest.ok()) << digest.status();
    EXPECT_EQ(digest->sha256, a.sha256) << a.name;
    EXPECT_EQ(digest->size_bytes, a.size_bytes) << a.name;
  }
  const nlohmann::json& report = r.events.back().report;
  EXPECT_EQ(report["device"], "cpu");
  EXPECT_GT(report["teacher"]["macs"].get<int64_t>(), 0);
  EXPECT_GT(report["teacher"]["params"].get<int64_t>(), 0);
  // Four learnable synthetic classes: eight epochs (seeded) get well past chance (25%).
  EXPECT_GT(report["teacher"]["top1"].get<double>(), 0.4);
  EXPECT_TRUE(fs::exists(dir + "/work/report.json"));
}

// Takes DIR/.lock of work dir `work` (created) as another executor would, writing `holder` as
// its pid; -1 on failure. Closing the descriptor frees it.
int HoldWorkDir(const std::string& work, const std::string& holder) {
  fs::create_directories(work);
  const int fd = open((work + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  const std::string line = holder + "\n";
  if (flock(fd, LOCK_EX) != 0 ||
      write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    close(fd);
    return -1;
  }
  return fd;
}

// Two executors never share a work dir: while another process holds DIR/.lock, compress-run
// waits (saying so), then gives up UNAVAILABLE naming the holder; once the lock is free it runs.
TEST(CompressRunTest, WaitsForAnotherExecutorOnTheSameWorkDir) {
  const std::string dir = FreshDir("locked");
  const std::string work = dir + "/work";
  const int fd = HoldWorkDir(work, "4242");
  ASSERT_GE(fd, 0);
  const std::string spec = WriteSpec(dir, TinySpec());
  RunResult busy = RunExecutor({"--spec", spec, "--workdir", work, "--workdir_lock_wait=1s"});
  EXPECT_EQ(busy.exit_code, 1);
  std::vector<Event> logs = OfType(busy, EventType::kLog);
  ASSERT_FALSE(logs.empty());
  EXPECT_EQ(logs[0].level, "warning");
  EXPECT_NE(logs[0].message.find("in use by another executor (pid 4242)"), std::string::npos)
      << logs[0].message;
  ASSERT_FALSE(busy.events.empty());
  EXPECT_EQ(busy.events.back().type, EventType::kError);
  EXPECT_EQ(busy.events.back().code, "UNAVAILABLE");
  EXPECT_NE(busy.events.back().message.find(work), std::string::npos) << busy.events.back().message;
  EXPECT_TRUE(OfType(busy, EventType::kPhaseStarted).empty());

  close(fd);
  RunResult free = RunExecutor({"--spec", spec, "--workdir", work});
  EXPECT_EQ(free.exit_code, 0);
  EXPECT_EQ(OfType(free, EventType::kReport).size(), 1u);
}

TEST(CompressRunTest, TimeLimitWhileWaitingForTheWorkDirIsDeadlineExceeded) {
  const std::string dir = FreshDir("locked_limit");
  const std::string work = dir + "/work";
  const int fd = HoldWorkDir(work, "4242");
  ASSERT_GE(fd, 0);
  nlohmann::json spec = TinySpec();
  spec["resources"]["time_limit_seconds"] = 1;
  RunResult r =
      RunExecutor({"--spec", WriteSpec(dir, spec), "--workdir", work, "--workdir_lock_wait=60s"});
  close(fd);
  EXPECT_EQ(r.exit_code, 1);
  ASSERT_FALSE(r.events.empty());
  EXPECT_EQ(r.events.back().type, EventType::kError);
  EXPECT_EQ(r.events.back().code, "DEADLINE_EXCEEDED") << r.events.back().message;
  EXPECT_NE(r.events.back().message.find("time_limit_seconds"), std::string::npos)
      << r.events.back().message;
}

TEST(CompressRunTest, SecondRunResumesWithoutRetraining) {
  const std::string dir = FreshDir("resume");
  const std::string spec = WriteSpec(dir, TinySpec());
  RunResult first = RunExecutor({"--spec", spec, "--workdir", dir + "/work"});
  ASSERT_EQ(first.exit_code, 0);
  RunResult second = RunExecutor({"--spec", spec, "--workdir", dir + "/work"});
  ASSERT_EQ(second.exit_code, 0);
  EXPECT_TRUE(OfType(second, EventType::kPhaseStarted).empty());
  EXPECT_TRUE(OfType(second, EventType::kMetric).empty());
  EXPECT_EQ(first.events.back().report["teacher"]["top1"],
            second.events.back().report["teacher"]["top1"]);
}

TEST(CompressRunTest, SigtermCancelsAndTheRunResumesMidPhase) {
  const std::string dir = FreshDir("cancel");
  nlohmann::json spec = TinySpec();
  spec["teacher"]["train"]["epochs"] = 20;
  const std::string path = WriteSpec(dir, spec);
  RunResult cancelled = RunExecutor({"--spec", path, "--workdir", dir + "/work"}, 2);
  EXPECT_EQ(cancelled.exit_code, 1);
  ASSERT_FALSE(cancelled.events.empty());
  EXPECT_EQ(cancelled.events.back().type, EventType::kError);
  EXPECT_EQ(cancelled.events.back().code, "CANCELLED");
  RunResult resumed = RunExecutor({"--spec", path, "--workdir", dir + "/work"});
  ASSERT_EQ(resumed.exit_code, 0);
  auto metrics = OfType(resumed, EventType::kMetric);
  ASSERT_FALSE(metrics.empty());
  EXPECT_GT(metrics.front().step, 1) << "a resumed phase continues from its checkpoint";
}

// An agent that dies closes the read end of the executor's stdout; the executor cancels itself
// (it used to run on until its next line, then die of SIGPIPE without a checkpoint).
TEST(CompressRunTest, ExecutorWhoseReaderIsGoneCancelsAndTheRunResumes) {
  const std::string dir = FreshDir("reader_gone");
  nlohmann::json spec = TinySpec();
  spec["teacher"]["train"]["epochs"] = 20;
  const std::string path = WriteSpec(dir, spec);
  const absl::Time start = absl::Now();
  RunResult orphaned =
      RunExecutor({"--spec", path, "--workdir", dir + "/work"}, 2, "", Stop::kCloseStdout);
  EXPECT_EQ(orphaned.exit_code, 1) << "128 + 13 is SIGPIPE";
  EXPECT_LT(absl::Now() - start, absl::Seconds(120)) << "20 epochs would take longer";
  RunResult resumed = RunExecutor({"--spec", path, "--workdir", dir + "/work"});
  ASSERT_EQ(resumed.exit_code, 0);
  auto metrics = OfType(resumed, EventType::kMetric);
  ASSERT_FALSE(metrics.empty());
  EXPECT_GT(metrics.front().step, 1) << "the cancelled run saved its checkpoint";
}

TEST(CompressRunTest, FailuresEndWithAnErrorLine) {
  const std::string dir = FreshDir("failures");
  struct Case {
    nlohmann::json patch;
    const char* code;
    const char* text;
  };
  std::vector<Case> cases = {
      {{{"dataset", {{"format", "fashion_mnist"}, {"path", dir + "/no-such-data"}}}},
       "NOT_FOUND",
       "no-such-data"},
      {{{"prune", {{"enabled", true}, {"target_macs_reduction", 0.95}}}},
       "FAILED_PRECONDITION",
       "spec.prune.target_macs_reduction"},
      // A class count in model.config is the spec's word, not replaced by the data set's (a
      // synthetic set's count is checked with the spec; another set's once it is read).
      {{{"model", {{"config", {{"num_classes", 7}}}}}},
       "INVALID_ARGUMENT",
       "spec.model.config.num_classes: the model has 7 classes, the synthetic data set 4"},
      {{{"teacher", {{"train", {{"epochs", -3}}}}}},
       "INVALID_ARGUMENT",
       "spec.teacher.train.epochs"},
      // A GPU this executor cannot use (none in a CPU build, or fewer than 100): retryable, as
      // another node can run the job.
      {{{"resources", {{"device", "cuda:99"}}}}, "UNAVAILABLE", "device 'cuda:99'"},
  };
  // A Fashion-MNIST directory whose test split has no examples.
  const std::string empty_val = dir + "/empty-val";
  {
    fs::create_directories(empty_val);
    auto idx = [&empty_val](const std::string& name, uint8_t kind, uint32_t count, bool images) {
      std::string bytes = {0, 0, 8, static_cast<char>(kind)};
      auto be32 = [&bytes](uint32_t v) {
        for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<char>(v >> shift));
      };
      be32(count);
      if (images) {
        be32(28);
        be32(28);
      }
      bytes.append(images ? count * 28 * 28 : count, '\0');
      std::ofstream(empty_val + "/" + name, std::ios::binary) << bytes;
    };
    idx("train-images-idx3-ubyte", 3, 8, true);
    idx("train-labels-idx1-ubyte", 1, 8, false);
    idx("t10k-images-idx3-ubyte", 3, 0, true);
    idx("t10k-labels-idx1-ubyte", 1, 0, false);
  }
  cases.push_back(
      {{{"dataset", {{"format", "fashion_mnist"}, {"path", empty_val}}},
        {"model", {{"config", {{"image_size", 28}, {"patch_size", 2}, {"window_size", 7}}}}}},
       "INVALID_ARGUMENT",
       "spec.dataset: the validation split of the fashion_mnist data set at"});
  // A teacher checkpoint directory of 7 classes for TinySpec's 4-class data.
  const std::string teacher_dir = dir + "/teacher-7-classes";
  {
    pipeline::UniformSwinOptions o;
    o.image_size = 16;
    o.in_channels = 1;
    o.num_classes = 7;
    o.patch_size = 2;
    o.window_size = 4;
    o.embed_dim = 16;
    o.depths = {2, 2};
    o.num_heads = {2, 4};
    absl::StatusOr<pipeline::SwinConfig> config = pipeline::MakeUniformSwinConfig(o);
    ASSERT_TRUE(config.ok()) << config.status();
    absl::StatusOr<pipeline::SwinTransformer> model = pipeline::CreateSwinTransformer(*config);
    ASSERT_TRUE(model.ok()) << model.status();
    ASSERT_TRUE(pipeline::SaveModel(teacher_dir, *model).ok());
  }
  cases.push_back(
      {{{"teacher", {{"checkpoint_path", teacher_dir}}}, {"model", {{"num_classes", 4}}}},
       "INVALID_ARGUMENT",
       "16x16x1 images and 7 classes, but the job's data are 16x16x1 with 4 classes"});
  int i = 0;
  for (const Case& c : cases) {
    nlohmann::json spec = TinySpec();
    spec.merge_patch(c.patch);
    const std::string case_dir = dir + "/" + std::to_string(i++);
    fs::create_directories(case_dir);
    RunResult r =
        RunExecutor({"--spec", WriteSpec(case_dir, spec), "--workdir", case_dir + "/work"});
    EXPECT_EQ(r.exit_code, 1) << c.code;
    ASSERT_FALSE(r.events.empty()) << c.code;
    EXPECT_EQ(r.events.back().type, EventType::kError);
    EXPECT_EQ(r.events.back().code, c.code);
    EXPECT_NE(r.events.back().message.find(c.text), std::string::npos) << r.events.back().message;
  }
  RunResult usage = RunExecutor({"--workdir", dir + "/w"});
  EXPECT_EQ(usage.exit_code, 2);
  ASSERT_FALSE(usage.events.empty());
  EXPECT_EQ(usage.events.back().code, "INVALID_ARGUMENT");
}

TEST(CompressRunTest, BadFlagsAndSpecFilesEndWithAnErrorLine) {
  const std::string dir = FreshDir("bad-flags");
  const std::string spec = WriteSpec(dir, TinySpec());
  const std::string work = dir + "/work";
  struct Case {
    std::vector<std::string> args;
    int exit_code;
    const char* code;
    const char* text;
  };
  const Case cases[] = {
      // 100,000 threads made LibTorch start ~32,000 before it hung, deaf to SIGTERM.
      {{"--spec", spec, "--workdir", work, "--threads=100000"},
       2,
       "INVALID_ARGUMENT",
       "--threads: must be in [0, 1024] (0 = the spec's), got 100000"},
      {{"--spec", spec, "--workdir", work, "--workdir_lock_wait=-1s"},
       2,
       "INVALID_ARGUMENT",
       "--workdir_lock_wait: must be a finite duration >= 0, got -1s"},
      {{"--spec", spec, "--workdir", work, "extra"},
       2,
       "INVALID_ARGUMENT",
       "unexpected argument 'extra'"},
      {{"--spec", dir, "--workdir", work}, 1, "FAILED_PRECONDITION", ": is a directory"},
      // /dev/zero never ends: it was read until memory ran out.
      {{"--spec", "/dev/zero", "--workdir", work},
       1,
       "FAILED_PRECONDITION",
       "--spec /dev/zero: not a regular file"},
      {{"--spec", dir + "/none.json", "--workdir", work},
       1,
       "NOT_FOUND",
       "none.json: cannot open: No such file or directory"},
  };
  for (const Case& c : cases) {
    RunResult r = RunExecutor(c.args);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.text;
    ASSERT_FALSE(r.events.empty()) << c.text;
    EXPECT_EQ(r.events.back().type, EventType::kError);
    EXPECT_EQ(r.events.back().code, c.code) << c.text;
    EXPECT_NE(r.events.back().message.find(c.text), std::string::npos) << r.events.back().message;
  }
  EXPECT_FALSE(fs::exists(work)) << "nothing ran";
}

std::vector<std::string> Phases(const RunResult& r, EventType type) {
  std::vector<std::string> out;
  for (const Event& e : OfType(r, type)) out.push_back(e.phase);
  return out;
}

// Top-1 of a checkpoint directory on the validation split of TinySpec's synthetic data, fed as
// the report says (x / 255 - 0.5) / 0.5.
double CheckpointTop1(const std::string& dir) {
  absl::StatusOr<StageModel> model = StageModel::Load(dir);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return -1;
  pipeline::DatasetOptions o;
  o.format = pipeline::DatasetFormat::kSynthetic;
  o.image_size = 16;
  o.channels = 1;
  o.synthetic_num_classes = 4;
  o.synthetic_train_size = 256;
  o.synthetic_val_size = 64;
  o.synthetic_seed = 7;
  absl::StatusOr<pipeline::DatasetSplits> data = pipeline::LoadDataset(o);
  EXPECT_TRUE(data.ok()) << data.status();
  if (!data.ok()) return -1;
  torch::NoGradGuard no_grad;
  model->module().eval();
  torch::Tensor x = data->val_images.to(torch::kFloat).div(255.0).sub(0.5).div(0.5);
  torch::Tensor predicted = model->forward(x).argmax(1);
  return predicted.eq(data->val_labels).to(torch::kDouble).mean().item<double>();
}

TEST(CompressRunTest, WholePipelineCutsMacsAndItsCheckpointReproducesTheReport) {
  const std::string dir = FreshDir("full");
  RunResult r = RunExecutor({"--spec", WriteSpec(dir, FullSpec()), "--workdir", dir + "/work"});
  ASSERT_EQ(r.exit_code, 0);
  const std::vector<std::string> order = {"teacher", "share", "prune", "distill"};
  EXPECT_EQ(Phases(r, EventType::kPhaseStarted), order);
  EXPECT_EQ(Phases(r, EventType::kPhaseFinished), order);
  const nlohmann::json& report = r.events.back().report;
  ASSERT_EQ(report["phases"].size(), 4u);
  EXPECT_TRUE(report["final"]["shared"].get<bool>());
  const double macs_reduction = report["comparison"]["macs_reduction"].get<double>();
  EXPECT_NEAR(macs_reduction, 0.32, 0.01);
  EXPECT_LT(report["final"]["params"].get<int64_t>(), report["teacher"]["params"].get<int64_t>());
  // Every phase but prune trains: the distill phase reports its loss terms.
  bool kd_term = false;
  for (const Event& e : OfType(r, EventType::kMetric)) {
    if (e.phase == "distill" && e.values.count("loss_kd_kl")) kd_term = true;
  }
  EXPECT_TRUE(kd_term);
  auto artifacts = OfType(r, EventType::kArtifact);
  ASSERT_EQ(artifacts.size(), 4u);
  EXPECT_EQ(artifacts.back().name, "prune_plan.json");
  EXPECT_NEAR(CheckpointTop1(dir + "/work/result"), report["final"]["top1"].get<double>(),
              1.0 / 64 + 1e-9);
}

TEST(CompressRunTest, PruneOnlyJobGivesAPlainModel) {
  const std::string dir = FreshDir("prune_only");
  nlohmann::json spec = FullSpec();
  spec["share"]["enabled"] = false;
  spec["prune"]["importance"] = "l2";
  RunResult r = RunExecutor({"--spec", WriteSpec(dir, spec), "--workdir", dir + "/work"});
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_EQ(Phases(r, EventType::kPhaseStarted),
            (std::vector<std::string>{"teacher", "prune", "distill"}));
  const nlohmann::json& report = r.events.back().report;
  EXPECT_FALSE(report["final"]["shared"].get<bool>());
  EXPECT_NEAR(report["comparison"]["macs_reduction"].get<double>(), 0.32, 0.01);
  EXPECT_NEAR(CheckpointTop1(dir + "/work/result"), report["final"]["top1"].get<double>(),
              1.0 / 64 + 1e-9);
}

// prune.target_params_reduction prunes to the teacher's parameters instead of its MACs.
TEST(CompressRunTest, PruneToAParamsTarget) {
  const std::string dir = FreshDir("prune_params");
  nlohmann::json spec = FullSpec();
  spec["share"]["enabled"] = false;
  spec["distill"]["enabled"] = false;
  spec["prune"].erase("target_macs_reduction");
  spec["prune"]["target_params_reduction"] = 0.4;
  spec["prune"]["importance"] = "l2";
  RunResult r = RunExecutor({"--spec", WriteSpec(dir, spec), "--workdir", dir + "/work"});
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_EQ(Phases(r, EventType::kPhaseStarted), (std::vector<std::string>{"teacher", "prune"}));
  const nlohmann::json& report = r.events.back().report;
  EXPECT_NEAR(report["comparison"]["params_reduction"].get<double>(), 0.4, 0.01);
  EXPECT_GT(report["comparison"]["macs_reduction"].get<double>(), 0.0);
  EXPECT_NEAR(report["phases"][1]["phase_params_reduction"].get<double>(), 0.4, 1e-9);
  EXPECT_FALSE(report["phases"][1].contains("phase_macs_reduction"));
}

// A params target that sharing alone already meets fails before any phase trains: the prune
// phase's starting model follows from the spec.
TEST(CompressRunTest, PruneTargetSharingAlreadyMeetsFailsBeforeTraining) {
  const std::string dir = FreshDir("prune_params_met");
  nlohmann::json spec = FullSpec();
  spec["prune"].erase("target_macs_reduction");
  spec["prune"]["target_params_reduction"] = 0.05;
  RunResult r = RunExecutor({"--spec", WriteSpec(dir, spec), "--workdir", dir + "/work"});
  EXPECT_EQ(r.exit_code, 1);
  ASSERT_FALSE(r.events.empty());
  EXPECT_EQ(r.events.back().code, "FAILED_PRECONDITION");
  EXPECT_NE(r.events.back().message.find("spec.prune.target_params_reduction: 0.05 of the "
                                         "teacher's "),
            std::string::npos)
      << r.events.back().message;
  EXPECT_NE(r.events.back().message.find("(the shared model)"), std::string::npos)
      << r.events.back().message;
  EXPECT_TRUE(OfType(r, EventType::kPhaseStarted).empty());
}

// Teacher -> distill with the teacher traced live (augmentation rules out cached logits): the
// student is a model of its own, so it moves away from the teacher and the KD term grows from 0
// (had the two been one model, the term would stay 0 at every step).
TEST(CompressRunTest, DistillOnlyStudentIsNotTheTeacher) {
  const std::string dir = FreshDir("distill_only");
  nlohmann::json spec = FullSpec();
  spec["share"]["enabled"] = false;
  spec["prune"]["enabled"] = false;
  spec["dataset"]["augment"] = true;
  spec["distill"]["train"]["lr"] = 0.01;
  RunResult r = RunExecutor({"--spec", WriteSpec(dir, spec), "--workdir", dir + "/work"});
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_EQ(Phases(r, EventType::kPhaseStarted), (std::vector<std::string>{"teacher", "distill"}));
  double most_kd = 0.0;
  int kd_points = 0;
  for (const Event& e : OfType(r, EventType::kMetric)) {
    if (e.phase != "distill") continue;
    auto it = e.values.find("loss_kd_kl");
    if (it == e.values.end()) continue;
    ++kd_points;
    most_kd = std::max(most_kd, it->second);
  }
  ASSERT_GT(kd_points, 0);
  EXPECT_GT(most_kd, 1e-6);
}

TEST(CompressRunTest, KilledPipelineResumesAtThePhaseAndStepItReached) {
  const std::string dir = FreshDir("full_resume");
  nlohmann::json spec = FullSpec();
  spec["distill"]["train"]["epochs"] = 6;
  const std::string path = WriteSpec(dir, spec);
  RunResult cancelled = RunExecutor({"--spec", path, "--workdir", dir + "/work"}, 2, "distill");
  EXPECT_EQ(cancelled.exit_code, 1);
  ASSERT_FALSE(cancelled.events.empty());
  EXPECT_EQ(cancelled.events.back().code, "CANCELLED");
  RunResult resumed = RunExecutor({"--spec", path, "--workdir", dir + "/work"});
  ASSERT_EQ(resumed.exit_code, 0);
  EXPECT_EQ(Phases(resumed, EventType::kPhaseStarted), std::vector<std::string>{"distill"});
  auto metrics = OfType(resumed, EventType::kMetric);
  ASSERT_FALSE(metrics.empty());
  EXPECT_GT(metrics.front().step, 1) << "the distill phase continues from its checkpoint";
  EXPECT_EQ(resumed.events.back().report["phases"].size(), 4u);
}

}  // namespace
}  // namespace compress::run
