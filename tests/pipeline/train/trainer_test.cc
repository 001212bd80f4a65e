// Tests of the Trainer loop on a tiny model and a synthetic task: learning, resume, non-finite
// loss, cancellation, metric points and checkpoint errors.
#include "worker/pipeline/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace compress::pipeline {
namespace {

// Three Gaussian blobs in 4-d, 192 samples, classes 0..2.
struct Blobs {
  torch::Tensor inputs;
  torch::Tensor targets;
};

Blobs MakeBlobs(int64_t n, uint64_t seed) {
  torch::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const torch::Tensor centers = torch::tensor(
      {{2.0f, 0.0f, 0.0f, -1.0f}, {-2.0f, 1.0f, 0.0f, 1.0f}, {0.0f, -2.0f, 2.0f, 0.0f}});
  const torch::Tensor targets = torch::arange(n, torch::kLong).remainder(3);
  const torch::Tensor inputs =
      centers.index_select(0, targets) + 0.7 * torch::randn({n, 4}, generator);
  return {inputs, targets};
}

// `hidden` units; with `extra`, one more Linear that forward does not use.
struct TinyNetImpl : torch::nn::Module {
  explicit TinyNetImpl(int64_t hidden = 16, bool extra = false) {
    fc1 = register_module("fc1", torch::nn::Linear(4, hidden));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden})));
    dropout = register_module("dropout", torch::nn::Dropout(0.2));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, 3));
    if (extra) register_module("extra", torch::nn::Linear(3, 3));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(dropout(torch::gelu(norm(fc1(x))))); }
  torch::nn::Linear fc1{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Dropout dropout{nullptr};
  torch::nn::Linear fc2{nullptr};
};
TORCH_MODULE(TinyNet);

TinyNet MakeNet(uint64_t seed, int64_t hidden = 16, bool extra = false) {
  torch::manual_seed(seed);
  return TinyNet(hidden, extra);
}

std::unique_ptr<TensorBatchSource> MakeSource(const Blobs& blobs, bool shuffle, bool noise) {
  TensorBatchSourceOptions options;
  options.batch_size = 16;
  options.shuffle = shuffle;
  options.seed = 11;
  if (noise) {
    options.transform = [](TrainBatch batch, torch::Generator& generator) {
      batch.inputs = batch.inputs + 0.1 * torch::randn(batch.inputs.sizes(), generator);
      return batch;
    };
  }
  return *TensorBatchSource::Create(blobs.inputs, blobs.targets, options);
}

TrainerOptions BaseOptions() {
  TrainerOptions options;
  options.epochs = 3;
  options.lr = 1e-2;
  options.min_lr = 1e-4;
  options.warmup_steps = 3;
  options.weight_decay = 0.05;
  options.clip_grad_norm = 1.0;
  options.log_every_steps = 1;
  options.num_threads = 1;
  options.seed = 3;
  return options;
}

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("trainer_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
  Blobs train_ = MakeBlobs(192, 1);
  Blobs val_ = MakeBlobs(96, 2);
};

absl::StatusOr<std::unique_ptr<Trainer>> MakeTrainer(TinyNet& net, const TrainerOptions& options) {
  LogitsFn logits = [net](const torch::Tensor& x) mutable { return net->forward(x); };
  return Trainer::Create(*net, ClassificationLoss(logits, options.label_smoothing), logits,
                         options);
}

// Trains `net` on `train`, cancelling after step `cancel_at_step` (-1: never).
absl::StatusOr<TrainResult> TrainCancellingAt(TinyNet& net, const TrainerOptions& options,
                                              BatchSource& train, int64_t cancel_at_step) {
  auto trainer = MakeTrainer(net, options);
  if (!trainer.ok()) return trainer.status();
  std::atomic<bool> cancel{false};
  TrainerCallbacks callbacks;
  callbacks.cancel_flag = &cancel;
  callbacks.on_metric = [&](const MetricPoint& p) {
    if (p.step == cancel_at_step) cancel = true;
  };
  return (*trainer)->Train(train, nullptr, callbacks);
}

TEST_F(TrainerTest, LearnsASyntheticTask) {
  TinyNet net = MakeNet(5);
  TrainerOptions options = BaseOptions();
  options.label_smoothing = 0.1;
  auto trainer = MakeTrainer(net, options);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto train = MakeSource(train_, /*shuffle=*/true, /*noise=*/true);
  auto val = MakeSource(val_, /*shuffle=*/false, /*noise=*/false);
  std::vector<MetricPoint> points;
  TrainerCallbacks callbacks;
  callbacks.on_metric = [&](const MetricPoint& p) { points.push_back(p); };
  auto result = (*trainer)->Train(*train, val.get(), callbacks);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->steps, 36);
  EXPECT_DOUBLE_EQ(result->epochs, 3.0);
  ASSERT_TRUE(result->final_eval.has_value());
  EXPECT_GT(result->final_eval->top1, 0.9);
  EXPECT_DOUBLE_EQ(result->final_eval->top5, 1.0);
  EXPECT_GT(result->images_per_second, 0.0);

  std::vector<double> train_losses;
  int evals = 0;
  for (const MetricPoint& p : points) {
    if (p.kind == MetricPoint::Kind::kTrain) {
      train_losses.push_back(p.loss);
      ASSERT_EQ(p.terms.size(), 1u);
      EXPECT_EQ(p.terms[0].first, "ce");
      EXPECT_NEAR(p.terms[0].second, p.loss, 1e-5);
      EXPECT_GT(p.images_per_second, 0.0);
    } else {
      ++evals;
      ASSERT_TRUE(p.eval.has_value());
    }
  }
  ASSERT_EQ(train_losses.size(), 36u);
  EXPECT_LT(train_losses.back(), 0.6 * train_losses.front());
  EXPECT_EQ(evals, 3);  // after epochs 1 and 2, and at the end
  // The lr of each point follows the schedule: warm-up 3 steps to 1e-2.
  EXPECT_NEAR(points[0].lr, 1e-2 / 3, 1e-12);
  EXPECT_NEAR(points[2].lr, 1e-2, 1e-12);
}

TEST_F(TrainerTest, ResumeMatchesAnUninterruptedRun) {
  auto run = [&](TinyNet& net, const TrainerOptions& options, int64_t cancel_at_step) {
    auto train = MakeSource(train_, /*shuffle=*/true, /*noise=*/true);
    return TrainCancellingAt(net, options, *train, cancel_at_step);
  };
  TrainerOptions options = BaseOptions();

  TinyNet reference = MakeNet(5);
  auto uninterrupted = run(reference, options, /*cancel_at_step=*/-1);
  ASSERT_TRUE(uninterrupted.ok()) << uninterrupted.status();

  options.checkpoint_dir = dir_.string();
  options.checkpoint_every_steps = 5;
  TinyNet first = MakeNet(5);
  auto cancelled = run(first, options, /*cancel_at_step=*/17);  // mid epoch 1
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);
  ASSERT_TRUE(std::filesystem::exists(Trainer::CheckpointPath(dir_.string())));

  TinyNet resumed = MakeNet(99);  // different init: the checkpoint must overwrite it
  torch::manual_seed(12345);      // and the generator state
  auto finished = run(resumed, options, /*cancel_at_step=*/-1);
  ASSERT_TRUE(finished.ok()) << finished.status();
  EXPECT_EQ(finished->resumed_from_step, 17);
  EXPECT_EQ(finished->steps, 36);

  const auto expected = reference->named_parameters();
  const auto actual = resumed->named_parameters();
  ASSERT_EQ(expected.size(), actual.size());
  for (const auto& item : expected) {
    EXPECT_TRUE(torch::equal(item.value(), actual[item.key()])) << item.key();
  }
}

// A phase resumed after its last step (its evaluation or its model was not saved) trains
// nothing in that run; its throughput is the phase's, from the checkpoint's totals.
TEST_F(TrainerTest, ResumedAfterTheLastStepReportsThePhasesThroughput) {
  TrainerOptions options = BaseOptions();
  options.checkpoint_dir = dir_.string();
  options.checkpoint_at_end = true;
  TinyNet first = MakeNet(5);
  auto trainer = MakeTrainer(first, options);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto train = MakeSource(train_, /*shuffle=*/true, /*noise=*/false);
  auto done = (*trainer)->Train(*train, nullptr);
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_GT(done->images_per_second, 0.0);

  TinyNet again = MakeNet(6);
  auto resumed_trainer = MakeTrainer(again, options);
  ASSERT_TRUE(resumed_trainer.ok()) << resumed_trainer.status();
  auto source = MakeSource(train_, /*shuffle=*/true, /*noise=*/false);
  auto resumed = (*resumed_trainer)->Train(*source, nullptr);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->resumed_from_step, done->steps);
  EXPECT_EQ(resumed->steps, done->steps);
  EXPECT_DOUBLE_EQ(resumed->train_seconds, done->train_seconds);
  EXPECT_DOUBLE_EQ(resumed->images_per_second, done->images_per_second);
}

// Mean squared output of `net`; call number `nan_at_call` (1-based) returns NaN (0: never).
LossFn SquaredOutputLoss(TinyNet net, int nan_at_call = 0) {
  auto calls = std::make_shared<int>(0);
  return [net, calls, nan_at_call](const TrainBatch& batch) mutable {
    LossOutput output;
    output.loss = net->forward(batch.inputs).pow(2).mean();
    if (++*calls == nan_at_call) {
      output.loss = output.loss * std::numeric_limits<float>::quiet_NaN();
    }
    return output;
  };
}

TEST_F(TrainerTest, NonFiniteLossStopsWithTheStep) {
  TinyNet net = MakeNet(5);
  LossFn loss = SquaredOutputLoss(net, /*nan_at_call=*/4);
  auto trainer = Trainer::Create(*net, loss, nullptr, BaseOptions());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto train = MakeSource(train_, true, false);
  auto result = (*trainer)->Train(*train, nullptr);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(result.status().message(), "at step 3")) << result.status();
  EXPECT_TRUE(absl::StrContains(result.status().message(), "nan")) << result.status();
}

// A loss that stays finite while its gradient does not (here at call 4, sqrt at 0 times 0): the
// step that would write NaN into the weights stops training, with or without per-step checks,
// and no checkpoint of the damaged weights is written.
TEST_F(TrainerTest, NonFiniteGradientOfAFiniteLossStopsTraining) {
  for (bool check_every_step : {true, false}) {
    SCOPED_TRACE(check_every_step);
    TinyNet net = MakeNet(5);
    auto calls = std::make_shared<int>(0);
    LossFn loss = [net, calls](const TrainBatch& batch) mutable {
      LossOutput output;
      output.loss = net->forward(batch.inputs).pow(2).mean();
      if (++*calls == 4) output.loss = output.loss + (output.loss * 0).sqrt();
      return output;
    };
    TrainerOptions options = BaseOptions();
    options.check_loss_every_step = check_every_step;
    options.max_steps = 4;
    options.checkpoint_dir = (dir_ / (check_every_step ? "checked" : "deferred")).string();
    auto trainer = Trainer::Create(*net, loss, nullptr, options);
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    auto train = MakeSource(train_, true, false);
    auto result = (*trainer)->Train(*train, nullptr);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition) << result.status();
    EXPECT_TRUE(absl::StrContains(result.status().message(), "gradient norm is nan at step 3"))
        << result.status();
    EXPECT_FALSE(std::filesystem::exists(Trainer::CheckpointPath(options.checkpoint_dir)));
  }
}

// Without per-step loss checks (the CUDA default), training follows the same path: same losses
// reported, same parameters up to rounding of the clipping scale.
TEST_F(TrainerTest, StepsWithoutPerStepChecksTrainTheSame) {
  auto run = [&](bool check_every_step, std::vector<double>* losses) {
    TinyNet net = MakeNet(5);
    TrainerOptions options = BaseOptions();
    options.log_every_steps = 4;
    options.check_loss_every_step = check_every_step;
    auto trainer = MakeTrainer(net, options);
    EXPECT_TRUE(trainer.ok()) << trainer.status();
    auto train = MakeSource(train_, true, true);
    TrainerCallbacks callbacks;
    callbacks.on_metric = [&](const MetricPoint& p) {
      if (p.kind == MetricPoint::Kind::kTrain) losses->push_back(p.loss);
    };
    auto result = (*trainer)->Train(*train, nullptr, callbacks);
    EXPECT_TRUE(result.ok()) << result.status();
    return net;
  };
  std::vector<double> checked_losses, deferred_losses;
  TinyNet checked = run(true, &checked_losses);
  TinyNet deferred = run(false, &deferred_losses);
  ASSERT_EQ(checked_losses.size(), 9u);  // 36 steps, a point every 4
  ASSERT_EQ(deferred_losses.size(), checked_losses.size());
  for (size_t i = 0; i < checked_losses.size(); ++i) {
    EXPECT_NEAR(deferred_losses[i], checked_losses[i], 1e-4) << "point " << i;
  }
  const auto expected = checked->named_parameters();
  const auto actual = deferred->named_parameters();
  for (const auto& item : expected) {
    EXPECT_TRUE(torch::allclose(item.value(), actual[item.key()], 1e-4, 1e-5)) << item.key();
  }
}

// Without per-step checks a NaN is found at the next metric point or checkpoint, before anything
// is saved: the checkpoint of step 2 stays, none is written after the NaN of step 3.
TEST_F(TrainerTest, NonFiniteLossWithoutPerStepChecksStopsBeforeTheNextCheckpoint) {
  TinyNet net = MakeNet(5);
  LossFn loss = SquaredOutputLoss(net, /*nan_at_call=*/4);
  TrainerOptions options = BaseOptions();
  options.check_loss_every_step = false;
  options.log_every_steps = 10;
  options.checkpoint_every_steps = 2;
  options.checkpoint_at_end = false;
  options.checkpoint_dir = dir_.string();
  auto trainer = Trainer::Create(*net, loss, nullptr, options);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto train = MakeSource(train_, true, false);
  auto result = (*trainer)->Train(*train, nullptr);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(result.status().message(), "in one of steps 2 to 3"))
      << result.status();
  EXPECT_TRUE(absl::StrContains(result.status().message(), "nan")) << result.status();

  // The checkpoint on disk is step 2's: a new run resumes there, with finite weights.
  TinyNet fresh = MakeNet(6);
  LossFn finite = SquaredOutputLoss(fresh);
  auto resumed = Trainer::Create(*fresh, finite, nullptr, options);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  auto again = MakeSource(train_, true, false);
  auto second = (*resumed)->Train(*again, nullptr);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->resumed_from_step, 2);
  for (const auto& item : fresh->named_parameters()) {
    EXPECT_TRUE(torch::isfinite(item.value()).all().item<bool>()) << item.key();
  }
}

// A cancel between metric points, after a NaN the deferred checks have not read yet, saves no
// checkpoint of the diverged model and reports the divergence.
TEST_F(TrainerTest, CancelAfterAnUncheckedNonFiniteLossSavesNothing) {
  TinyNet net = MakeNet(5);
  LossFn nan_at_step_3 = SquaredOutputLoss(net, /*nan_at_call=*/4);
  int calls = 0;
  LossFn loss = [&](const TrainBatch& batch) {
    ++calls;
    return nan_at_step_3(batch);
  };
  TrainerOptions options = BaseOptions();
  options.check_loss_every_step = false;
  options.log_every_steps = 10;
  options.checkpoint_every_steps = 0;
  options.checkpoint_at_end = true;
  options.checkpoint_dir = dir_.string();
  auto trainer = Trainer::Create(*net, loss, nullptr, options);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto train = MakeSource(train_, true, false);
  TrainerCallbacks callbacks;
  callbacks.should_cancel = [&] { return calls >= 6; };
  auto result = (*trainer)->Train(*train, nullptr, callbacks);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition) << result.status();
  EXPECT_TRUE(absl::StrContains(result.status().message(), "in one of steps 0 to 5"))
      << result.status();
  EXPECT_FALSE(std::filesystem::exists(Trainer::CheckpointPath(dir_.string())));
}

TEST_F(TrainerTest, CancellationBetweenSteps) {
  TinyNet net = MakeNet(5);
  TrainerOptions options = BaseOptions();
  options.checkpoint_dir = dir_.string();
  auto trainer = MakeTrainer(net, options);
  ASSERT_TRUE(trainer.ok());
  auto train = MakeSource(train_, true, false);
  int steps_seen = 0;
  TrainerCallbacks callbacks;
  callbacks.on_metric = [&](const MetricPoint& p) { steps_seen = static_cast<int>(p.step); };
  callbacks.should_cancel = [&] { return steps_seen >= 5; };
  auto result = (*trainer)->Train(*train, nullptr, callbacks);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(absl::StrContains(result.status().message(), "after step 5"));
  // The checkpoint at the end records step 5.
  torch::serialize::InputArchive archive;
  archive.load_from(Trainer::CheckpointPath(dir_.string()));
  torch::Tensor step;
  archive.read("step", step);
  EXPECT_EQ(step.item<int64_t>(), 5);
}

TEST_F(TrainerTest, CancelFlagSetBeforeStart) {
  TinyNet net = MakeNet(5);
  auto trainer = MakeTrainer(net, BaseOptions());
  ASSERT_TRUE(trainer.ok());
  auto train = MakeSource(train_, true, false);
  std::atomic<bool> cancel{true};
  TrainerCallbacks callbacks;
  callbacks.cancel_flag = &cancel;
  EXPECT_EQ((*trainer)->Train(*train, nullptr, callbacks).status().code(),
            absl::StatusCode::kCancelled);
}

// A BatchSource that sets the shared cancel flag at its `cancel_at`-th Next() and answers
// CANCELLED from then on, as a LoaderBatchSource watching that flag does.
class CancellingSource : public BatchSource {
 public:
  CancellingSource(std::unique_ptr<BatchSource> inner, std::atomic<bool>* flag, int cancel_at)
      : inner_(std::move(inner)), flag_(flag), cancel_at_(cancel_at) {}
  int64_t BatchesPerEpoch() const override { return inner_->BatchesPerEpoch(); }
  absl::Status StartEpoch(int64_t epoch, int64_t first_batch) override {
    return inner_->StartEpoch(epoch, first_batch);
  }
  absl::StatusOr<std::optional<TrainBatch>> Next() override {
    if (++calls_ == cancel_at_) flag_->store(true);
    if (flag_->load()) return absl::CancelledError("cancelled while reading the batches");
    return inner_->Next();
  }

 private:
  std::unique_ptr<BatchSource> inner_;
  std::atomic<bool>* flag_;
  const int cancel_at_;
  int calls_ = 0;
};

int64_t CheckpointStep(const std::string& dir) {
  torch::serialize::InputArchive archive;
  archive.load_from(Trainer::CheckpointPath(dir));
  torch::Tensor step;
  archive.read("step", step);
  return step.item<int64_t>();
}

// A cancel that a source reports, during an evaluation or a batch read, ends the phase as a
// cancel between steps does: CANCELLED with the checkpoint of the step reached.
TEST_F(TrainerTest, CancelReportedByASourceWritesTheCheckpoint) {
  {
    TinyNet net = MakeNet(5);
    TrainerOptions options = BaseOptions();
    options.checkpoint_dir = dir_.string();
    options.eval_every_epochs = 1;
    auto trainer = MakeTrainer(net, options);
    ASSERT_TRUE(trainer.ok());
    std::atomic<bool> cancel{false};
    auto train = MakeSource(train_, true, false);
    CancellingSource val(MakeSource(val_, false, false), &cancel, /*cancel_at=*/2);
    TrainerCallbacks callbacks;
    callbacks.cancel_flag = &cancel;
    auto result = (*trainer)->Train(*train, &val, callbacks);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
    EXPECT_TRUE(absl::StrContains(result.status().message(), "training cancelled after step 12"))
        << result.status();
    EXPECT_EQ(CheckpointStep(dir_.string()), 12) << "the first epoch's 12 steps are kept";
  }
  std::filesystem::remove_all(dir_);
  {
    TinyNet net = MakeNet(5);
    TrainerOptions options = BaseOptions();
    options.checkpoint_dir = dir_.string();
    auto trainer = MakeTrainer(net, options);
    ASSERT_TRUE(trainer.ok());
    std::atomic<bool> cancel{false};
    CancellingSource train(MakeSource(train_, true, false), &cancel, /*cancel_at=*/8);
    TrainerCallbacks callbacks;
    callbacks.cancel_flag = &cancel;
    auto result = (*trainer)->Train(train, nullptr, callbacks);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
    EXPECT_TRUE(absl::StrContains(result.status().message(), "training cancelled after step 7"))
        << result.status();
    EXPECT_EQ(CheckpointStep(dir_.string()), 7);
  }
}

// A CANCELLED from a source without a cancel asked of the trainer is the source's error.
TEST_F(TrainerTest, CancelledSourceWithoutACancelIsTheSourcesError) {
  TinyNet net = MakeNet(5);
  TrainerOptions options = BaseOptions();
  options.checkpoint_dir = dir_.string();
  auto trainer = MakeTrainer(net, options);
  ASSERT_TRUE(trainer.ok());
  std::atomic<bool> source_flag{false};
  CancellingSource train(MakeSource(train_, true, false), &source_flag, /*cancel_at=*/3);
  auto result = (*trainer)->Train(train, nullptr, TrainerCallbacks());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(result.status().message(), "cancelled while reading the batches");
}

TEST_F(TrainerTest, MaxStepsBoundsThePhase) {
  TinyNet net = MakeNet(5);
  TrainerOptions options = BaseOptions();
  options.epochs = 0;
  options.max_steps = 20;  // crosses an epoch boundary (12 batches per epoch)
  options.log_every_steps = 0;
  auto trainer = MakeTrainer(net, options);
  ASSERT_TRUE(trainer.ok());
  auto train = MakeSource(train_, true, false);
  auto result = (*trainer)->Train(*train, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->steps, 20);
  EXPECT_NEAR(result->epochs, 20.0 / 12.0, 1e-12);
}

// A checkpoint that cannot be written whole (a full disk, here a file size limit) ends the run
// RESOURCE_EXHAUSTED, retryable, and leaves the previous checkpoint in place and no temporary;
// the next run resumes from it.
TEST_F(TrainerTest, ACheckpointThatCannotBeWrittenIsResourceExhaustedAndKeepsThePreviousOne) {
  TrainerOptions options = BaseOptions();
  options.checkpoint_dir = dir_.string();
  options.checkpoint_every_steps = 5;
  auto run = [&](int64_t cancel_at_step) {
    TinyNet net = MakeNet(5);
    auto train = MakeSource(train_, /*shuffle=*/true, /*noise=*/false);
    return TrainCancellingAt(net, options, *train, cancel_at_step);
  };
  ASSERT_EQ(run(/*cancel_at_step=*/7).status().code(), absl::StatusCode::kCancelled);
  const std::string path = Trainer::CheckpointPath(dir_.string());
  const auto size = std::filesystem::file_size(path);

  // Files of this process may grow to half a checkpoint (whose size varies by a few bytes from
  // step to step): the write past that fails with EFBIG.
  struct rlimit old_limit;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  struct rlimit limit = old_limit;
  limit.rlim_cur = size / 2;
  sighandler_t old_handler = signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &limit), 0);
  auto failed = run(/*cancel_at_step=*/-1);
  setrlimit(RLIMIT_FSIZE, &old_limit);
  signal(SIGXFSZ, old_handler);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kResourceExhausted) << failed.status();
  EXPECT_TRUE(absl::StrContains(failed.status().message(), "cannot save checkpoint"))
      << failed.status();
  EXPECT_EQ(std::filesystem::file_size(path), size);
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    EXPECT_EQ(entry.path().string(), path) << "left behind";
  }

  auto resumed = run(/*cancel_at_step=*/-1);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->resumed_from_step, 7);
}

TEST_F(TrainerTest, CorruptCheckpointIsDataLoss) {
  std::filesystem::create_directories(dir_);
  std::ofstream(Trainer::CheckpointPath(dir_.string())) << "not an archive";
  TinyNet net = MakeNet(5);
  TrainerOptions options = BaseOptions();
  options.checkpoint_dir = dir_.string();
  auto trainer = MakeTrainer(net, options);
  ASSERT_TRUE(trainer.ok());
  auto train = MakeSource(train_, true, false);
  auto result = (*trainer)->Train(*train, nullptr);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(result.status().message(), "trainer_state.pt"));
}

// Copies of a module's parameters, to check that a refused checkpoint changed none of them.
std::vector<torch::Tensor> CopyParameters(const TinyNet& net) {
  std::vector<torch::Tensor> copies;
  for (const torch::Tensor& p : net->parameters()) copies.push_back(p.detach().clone());
  return copies;
}

void ExpectParameters(const TinyNet& net, const std::vector<torch::Tensor>& copies) {
  const std::vector<torch::Tensor> parameters = net->parameters();
  ASSERT_EQ(parameters.size(), copies.size());
  for (size_t i = 0; i < copies.size(); ++i) {
    EXPECT_TRUE(parameters[i].sizes() == copies[i].sizes() &&
                torch::equal(parameters[i], copies[i]))
        << "parameter " << i << " changed";
  }
}

// Trains `net` for 3 steps with a checkpoint at the end in `dir`.
void WriteCheckpoint(TinyNet& net, const Blobs& blobs, const std::filesystem::path& dir) {
  TrainerOptions options = BaseOptions();
  options.epochs = 0;
  options.max_steps = 3;
  options.checkpoint_dir = dir.string();
  auto trainer = MakeTrainer(net, options);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto train = MakeSource(blobs, true, false);
  auto result = (*trainer)->Train(*train, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_TRUE(std::filesystem::exists(Trainer::CheckpointPath(dir.string())));
}

// Resumes `net` from the checkpoint in `dir`; the status of the phase.
absl::Status Resume(TinyNet& net, const Blobs& blobs, const std::filesystem::path& dir) {
  TrainerOptions options = BaseOptions();
  options.checkpoint_dir = dir.string();
  auto trainer = MakeTrainer(net, options);
  if (!trainer.ok()) return trainer.status();
  auto train = MakeSource(blobs, true, false);
  return (*trainer)->Train(*train, nullptr).status();
}

// A checkpoint whose tensors have other shapes than the model (a corrupt or hand-edited file):
// DATA_LOSS naming the file, the tensors and both shapes, and nothing is loaded. LibTorch's own
// loader takes any shape and the phase would fail at its first step.
TEST_F(TrainerTest, CheckpointOfOtherShapesIsDataLossBeforeAnyCopy) {
  TinyNet wide = MakeNet(5, /*hidden=*/24);
  WriteCheckpoint(wide, train_, dir_);
  TinyNet net = MakeNet(5);
  const std::vector<torch::Tensor> before = CopyParameters(net);
  const absl::Status status = Resume(net, train_, dir_);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  const std::string message(status.message());
  EXPECT_TRUE(absl::StrContains(message, absl::StrCat("cannot resume from checkpoint ",
                                                      Trainer::CheckpointPath(dir_.string()))))
      << message;
  EXPECT_TRUE(absl::StrContains(
      message, "wrong tensors: \"fc1.weight\" has shape [24,4] but the model expects [16,4]"))
      << message;
  EXPECT_TRUE(absl::StrContains(
      message,
      "optimizer exp_avg of \"fc1.weight\" has shape [24,4] but the parameter expects "
      "[16,4]"))
      << message;
  ExpectParameters(net, before);
}

TEST_F(TrainerTest, CheckpointWithMissingOrExtraTensorsIsDataLoss) {
  TinyNet with_extra = MakeNet(5, 16, /*extra=*/true);
  WriteCheckpoint(with_extra, train_, dir_);
  TinyNet net = MakeNet(5);
  const std::vector<torch::Tensor> before = CopyParameters(net);
  absl::Status status = Resume(net, train_, dir_);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_TRUE(
      absl::StrContains(status.message(), "unexpected tensors: \"extra.weight\", \"extra.bias\""))
      << status;
  EXPECT_TRUE(absl::StrContains(status.message(),
                                "optimizer parameter group 0 has 3 parameters "
                                "but the optimizer's has 2"))
      << status;
  ExpectParameters(net, before);

  std::filesystem::remove_all(dir_);
  TinyNet plain = MakeNet(5);
  WriteCheckpoint(plain, train_, dir_);
  TinyNet extended = MakeNet(6, 16, /*extra=*/true);
  const std::vector<torch::Tensor> extended_before = CopyParameters(extended);
  status = Resume(extended, train_, dir_);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_TRUE(
      absl::StrContains(status.message(), "missing tensors: \"extra.weight\", \"extra.bias\""))
      << status;
  ExpectParameters(extended, extended_before);
}

// Writes a checkpoint as Trainer::SaveCheckpoint does, from `model` and `optimizer` at step 3.
void WriteArchive(const std::filesystem::path& dir, const torch::nn::Module& model,
                  const torch::optim::Optimizer& optimizer) {
  torch::serialize::OutputArchive archive;
  archive.write("format_version", torch::tensor(int64_t{1}));
  archive.write("step", torch::tensor(int64_t{3}));
  archive.write("epoch", torch::tensor(int64_t{0}));
  archive.write("batch", torch::tensor(int64_t{3}));
  archive.write("batches_per_epoch", torch::tensor(int64_t{12}));
  torch::serialize::OutputArchive model_archive;
  model.save(model_archive);
  archive.write("model", model_archive);
  torch::serialize::OutputArchive optimizer_archive;
  optimizer.save(optimizer_archive);
  archive.write("optimizer", optimizer_archive);
  archive.write("rng_cpu", at::detail::getDefaultCPUGenerator().get_state());
  std::filesystem::create_directories(dir);
  archive.save_to(Trainer::CheckpointPath(dir.string()));
}

// The optimizer's moments and the model's dtypes are checked too.
TEST_F(TrainerTest, CheckpointWithOtherOptimizerStateOrDtypeIsDataLoss) {
  // The model of the right shapes with the optimizer state of a wider one.
  TinyNet wide = MakeNet(5, /*hidden=*/24);
  auto wide_optimizer = MakeAdamW(*wide, BaseOptions());
  ASSERT_TRUE(wide_optimizer.ok()) << wide_optimizer.status();
  wide->forward(train_.inputs).pow(2).mean().backward();
  (*wide_optimizer)->step();
  TinyNet same = MakeNet(7);
  WriteArchive(dir_, *same, **wide_optimizer);
  TinyNet net = MakeNet(5);
  std::vector<torch::Tensor> before = CopyParameters(net);
  absl::Status status = Resume(net, train_, dir_);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_TRUE(absl::StrContains(status.message(),
                                "optimizer exp_avg_sq of \"norm.weight\" has shape [24] but the "
                                "parameter expects [16]"))
      << status;
  EXPECT_FALSE(absl::StrContains(status.message(), "the model expects")) << status;
  ExpectParameters(net, before);

  // Double weights for a float model.
  TinyNet doubled = MakeNet(7);
  doubled->to(torch::kDouble);
  auto optimizer = MakeAdamW(*doubled, BaseOptions());
  ASSERT_TRUE(optimizer.ok()) << optimizer.status();
  WriteArchive(dir_, *doubled, **optimizer);
  status = Resume(net, train_, dir_);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_TRUE(absl::StrContains(status.message(),
                                "\"fc2.bias\" has dtype Double but the model expects Float"))
      << status;
  ExpectParameters(net, before);
}

TEST_F(TrainerTest, RejectsInconsistentOptions) {
  TinyNet net = MakeNet(5);
  TrainerOptions options = BaseOptions();
  options.epochs = 0;
  options.max_steps = 0;
  EXPECT_EQ(MakeTrainer(net, options).status().code(), absl::StatusCode::kInvalidArgument);
  options = BaseOptions();
  options.checkpoint_every_steps = 10;  // without a directory
  EXPECT_EQ(MakeTrainer(net, options).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace compress::pipeline
