// Trainer's resumable checkpoint: one torch::serialize archive written atomically (temporary
// file, fsync, rename, fsync of the directory) so that a crash or a power loss while writing
// leaves the previous checkpoint intact, and one after it leaves the new one whole.
//
// Archive layout:
//   format_version, step, epoch, batch, batches_per_epoch   int64 scalars
//   model/...                                               torch::nn::Module::save
//   optimizer/...                                           torch::optim::Optimizer::save
//   rng_cpu                                                 default CPU generator state
//   rng_cuda_<i>                                            default CUDA generator states
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "worker/events/durable_file.h"
#include "worker/pipeline/train/trainer.h"

namespace compress::pipeline {
namespace {

constexpr int64_t kFormatVersion = 1;

int64_t ReadInt(torch::serialize::InputArchive& archive, const std::string& key) {
  torch::Tensor value;
  archive.read(key, value);
  return value.item<int64_t>();
}

}  // namespace

absl::Status Trainer::SaveCheckpoint(const Position& position, int64_t batches_per_epoch) {
  const std::filesystem::path dir(options_.checkpoint_dir);
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return ErrnoStatus(error.value(), absl::StrCat("cannot create checkpoint directory ", dir.string()));
  }
  torch::serialize::OutputArchive archive;
  archive.write("format_version", torch::tensor(kFormatVersion, torch::kLong));
  archive.write("step", torch::tensor(position.step, torch::kLong));
  archive.write("epoch", torch::tensor(position.epoch, torch::kLong));
  archive.write("batch", torch::tensor(position.batch, torch::kLong));
  archive.write("batches_per_epoch", torch::tensor(batches_per_epoch, torch::kLong));
  torch::serialize::OutputArchive model_archive;
  module_.save(model_archive);
  archive.write("model", model_archive);
  torch::serialize::OutputArchive optimizer_archive;
  optimizer_->save(optimizer_archive);
  archive.write("optimizer", optimizer_archive);
  archive.write("rng_cpu", at::detail::getDefaultCPUGenerator().get_state());
  if (torch::cuda::is_available()) {
    for (size_t i = 0; i < torch::cuda::device_count(); ++i) {
      const torch::Device device(torch::kCUDA, static_cast<c10::DeviceIndex>(i));
      archive.write(absl::StrCat("rng_cuda_", i),
                    at::globalContext().defaultGenerator(device).get_state());
    }
  }
  const std::string path = CheckpointPath(options_.checkpoint_dir);
  const std::string temporary = path + ".tmp";
  archive.save_to(temporary);
  if (absl::Status synced = SyncPath(temporary); !synced.ok()) return synced;
  std::filesystem::rename(temporary, path, error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot move checkpoint ", temporary, " to ", path, ": ", error.message()));
  }
  return SyncPath(dir.string());
}

absl::StatusOr<Trainer::Position> Trainer::MaybeLoadCheckpoint(int64_t batches_per_epoch) {
  Position position;
  if (options_.checkpoint_dir.empty() || !options_.resume) return position;
  const std::string path = CheckpointPath(options_.checkpoint_dir);
  if (!std::filesystem::exists(path)) return position;

  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path, options_.device);
    if (ReadInt(archive, "format_version") != kFormatVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat("checkpoint ", path, " has an unknown format version"));
    }
    position.step = ReadInt(archive, "step");
    position.epoch = ReadInt(archive, "epoch");
    position.batch = ReadInt(archive, "batch");
    const int64_t saved_batches = ReadInt(archive, "batches_per_epoch");
    if (saved_batches != batches_per_epoch) {
      return absl::FailedPreconditionError(
          absl::StrCat("checkpoint ", path, " was written with ", saved_batches,
                       " batches per epoch but the training split now has ", batches_per_epoch,
                       "; the loader position cannot be restored"));
    }
    torch::serialize::InputArchive model_archive;
    archive.read("model", model_archive);
    module_.load(model_archive);
    torch::serialize::InputArchive optimizer_archive;
    archive.read("optimizer", optimizer_archive);
    optimizer_->load(optimizer_archive);
    torch::Tensor rng_cpu;
    archive.read("rng_cpu", rng_cpu);
    // Generator is a handle: the copy shares the default generator's state.
    at::Generator cpu_generator = at::detail::getDefaultCPUGenerator();
    cpu_generator.set_state(rng_cpu.to(torch::kCPU));
    if (torch::cuda::is_available()) {
      for (size_t i = 0; i < torch::cuda::device_count(); ++i) {
        torch::Tensor state;
        if (!archive.try_read(absl::StrCat("rng_cuda_", i), state)) continue;
        const torch::Device device(torch::kCUDA, static_cast<c10::DeviceIndex>(i));
        at::Generator generator = at::globalContext().defaultGenerator(device);
        generator.set_state(state.to(torch::kCPU));
      }
    }
  } catch (const c10::Error& error) {
    return absl::DataLossError(
        absl::StrCat("cannot resume from checkpoint ", path, ": ", error.what_without_backtrace()));
  }
  return position;
}

}  // namespace compress::pipeline
