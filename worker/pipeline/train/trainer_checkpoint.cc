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
#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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

// At most this many problems of one kind are spelled out in an error message.
constexpr size_t kMaxListedProblems = 10;

std::string ShapeString(torch::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

std::string Quoted(const std::string& name) { return absl::StrCat("\"", name, "\""); }

// What a checkpoint holds that the module and optimizer it is loaded into do not expect.
// LibTorch's loaders check none of it: InputArchive::read replaces a parameter's storage and
// sizes with whatever the archive holds, and Optimizer::load moves the saved moments in as they
// are, so a mismatch would only surface at the next training step, as an INTERNAL error.
struct Mismatches {
  std::vector<std::string> missing;
  std::vector<std::string> wrong;
  std::vector<std::string> unexpected;

  // `found` against `expected` (a tensor of the running process); `what` names it, `owner` says
  // what expects it ("the model", "the parameter", ...).
  void Compare(const std::string& what, const torch::Tensor& found, const torch::Tensor& expected,
               const char* owner) {
    if (found.sizes() != expected.sizes()) {
      wrong.push_back(absl::StrCat(what, " has shape ", ShapeString(found.sizes()), " but ", owner,
                                   " expects ", ShapeString(expected.sizes())));
    } else if (found.scalar_type() != expected.scalar_type()) {
      wrong.push_back(absl::StrCat(
          what, " has dtype ", std::string(c10::toString(found.scalar_type())), " but ", owner,
          " expects ", std::string(c10::toString(expected.scalar_type()))));
    }
  }

  bool empty() const { return missing.empty() && wrong.empty() && unexpected.empty(); }

  std::string ToString() const {
    std::vector<std::string> parts;
    auto add = [&parts](const char* kind, const std::vector<std::string>& items) {
      if (items.empty()) return;
      const size_t listed = std::min(items.size(), kMaxListedProblems);
      std::string text =
          absl::StrCat(kind, ": ", absl::StrJoin(items.begin(), items.begin() + listed, ", "));
      if (items.size() > listed) absl::StrAppend(&text, " (and ", items.size() - listed, " more)");
      parts.push_back(std::move(text));
    };
    add("missing tensors", missing);
    add("wrong tensors", wrong);
    add("unexpected tensors", unexpected);
    return absl::StrJoin(parts, "; ");
  }
};

// Every tensor below `archive` (nested archives are submodules), for an unexpected submodule.
void ListTensors(torch::serialize::InputArchive& archive, const std::string& prefix,
                 std::vector<std::string>& out) {
  for (const std::string& key : archive.keys()) {
    torch::Tensor tensor;
    torch::serialize::InputArchive child;
    if (archive.try_read(key, tensor)) {
      out.push_back(Quoted(prefix + key));
    } else if (archive.try_read(key, child)) {
      ListTensors(child, prefix + key + ".", out);
    }
  }
}

// Compares the archive Module::save wrote (a module's own parameters and buffers by name, then a
// nested archive per serializable child) with `module`, reading tensors into fresh handles so
// that nothing of the module changes. Attributes that are neither tensors nor archives are
// LibTorch's own and ignored.
void CompareModule(torch::nn::Module& module, torch::serialize::InputArchive& archive,
                   const std::string& prefix, Mismatches& out) {
  std::set<std::string> expected;
  auto compare = [&](const std::string& key, const torch::Tensor& target) {
    expected.insert(key);
    torch::Tensor found;
    if (!archive.try_read(key, found)) {
      out.missing.push_back(Quoted(prefix + key));
      return;
    }
    out.Compare(Quoted(prefix + key), found, target, "the model");
  };
  for (const auto& parameter : module.named_parameters(/*recurse=*/false)) {
    compare(parameter.key(), parameter.value());
  }
  for (const auto& buffer : module.named_buffers(/*recurse=*/false)) {
    compare(buffer.key(), buffer.value());
  }
  for (const auto& child : module.named_children()) {
    if (!child.value()->is_serializable()) continue;
    expected.insert(child.key());
    const std::string child_prefix = absl::StrCat(prefix, child.key(), ".");
    torch::serialize::InputArchive child_archive;
    if (!archive.try_read(child.key(), child_archive)) {
      for (const auto& parameter : child.value()->named_parameters()) {
        out.missing.push_back(Quoted(child_prefix + parameter.key()));
      }
      for (const auto& buffer : child.value()->named_buffers()) {
        out.missing.push_back(Quoted(child_prefix + buffer.key()));
      }
      continue;
    }
    CompareModule(*child.value(), child_archive, child_prefix, out);
  }
  for (const std::string& key : archive.keys()) {
    if (expected.count(key) > 0) continue;
    torch::Tensor tensor;
    torch::serialize::InputArchive child;
    if (archive.try_read(key, tensor)) {
      out.unexpected.push_back(Quoted(prefix + key));
    } else if (archive.try_read(key, child)) {
      ListTensors(child, absl::StrCat(prefix, key, "."), out.unexpected);
    }
  }
}

// Compares the archive Optimizer::save wrote for AdamW with `optimizer`. In that archive,
// "param_groups" holds "param_groups/size" and an archive "param_groups/<i>" per group, whose
// "params/size" and "params/<j>" give the key of each parameter (its address when saved) in the
// optimizer's order; "state" holds an archive per stepped parameter under that key, with "step",
// "exp_avg", "exp_avg_sq" and, with amsgrad, "max_exp_avg_sq".
// Groups must have the optimizer's sizes, every state must belong to a listed parameter and hold
// moments of its shape and dtype. A parameter without state is fine (it had no gradient yet).
void CompareOptimizer(const torch::optim::Optimizer& optimizer,
                      const std::map<const void*, std::string>& names,
                      torch::serialize::InputArchive& archive, Mismatches& out) {
  const auto name_of = [&names](const torch::Tensor& parameter) {
    auto it = names.find(parameter.unsafeGetTensorImpl());
    return it != names.end() ? it->second : std::string("?");
  };
  torch::serialize::InputArchive groups_archive;
  if (!archive.try_read("param_groups", groups_archive)) {
    out.missing.push_back("optimizer \"param_groups\"");
    return;
  }
  torch::Tensor size;
  if (!groups_archive.try_read("param_groups/size", size)) {
    out.missing.push_back("optimizer \"param_groups/size\"");
    return;
  }
  const auto& groups = optimizer.param_groups();
  const int64_t saved_groups = size.item<int64_t>();
  if (saved_groups != static_cast<int64_t>(groups.size())) {
    out.wrong.push_back(absl::StrCat("the optimizer state has ", saved_groups,
                                     " parameter groups but the optimizer has ", groups.size()));
    return;
  }
  // Saved keys with their parameters, in the optimizer's order: the states are checked in that
  // order (the archive lists them by key, an address), so that a message is the same every run.
  std::vector<std::pair<std::string, torch::Tensor>> parameter_by_key;
  for (size_t i = 0; i < groups.size(); ++i) {
    const std::string group_key = absl::StrCat("param_groups/", i);
    torch::serialize::InputArchive group;
    torch::Tensor count;
    if (!groups_archive.try_read(group_key, group) || !group.try_read("params/size", count)) {
      out.missing.push_back(absl::StrCat("optimizer \"", group_key, "\""));
      continue;
    }
    const std::vector<torch::Tensor>& parameters = groups[i].params();
    const int64_t saved = count.item<int64_t>();
    if (saved != static_cast<int64_t>(parameters.size())) {
      out.wrong.push_back(absl::StrCat("optimizer parameter group ", i, " has ", saved,
                                       " parameters but the optimizer's has ", parameters.size()));
      continue;
    }
    for (size_t j = 0; j < parameters.size(); ++j) {
      c10::IValue key;
      if (!group.try_read(absl::StrCat("params/", j), key) || !key.isString()) {
        out.missing.push_back(absl::StrCat("optimizer \"", group_key, "/params/", j, "\""));
        continue;
      }
      parameter_by_key.emplace_back(key.toStringRef(), parameters[j]);
    }
  }
  torch::serialize::InputArchive state_archive;
  if (!archive.try_read("state", state_archive)) {
    out.missing.push_back("optimizer \"state\"");
    return;
  }
  std::set<std::string> listed;
  for (const auto& [key, parameter] : parameter_by_key) listed.insert(key);
  for (const std::string& key : state_archive.keys()) {
    torch::serialize::InputArchive state;
    if (listed.count(key) == 0 && state_archive.try_read(key, state)) {
      out.unexpected.push_back(
          absl::StrCat("optimizer state \"", key, "\" of no parameter in param_groups"));
    }
  }
  for (const auto& [key, parameter] : parameter_by_key) {
    torch::serialize::InputArchive state;
    if (!state_archive.try_read(key, state)) continue;
    const std::string name = name_of(parameter);
    c10::IValue step;
    if (!state.try_read("step", step) || !step.isInt()) {
      out.missing.push_back(absl::StrCat("optimizer step of ", Quoted(name)));
    }
    for (const char* moment : {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}) {
      torch::Tensor found;
      if (!state.try_read(moment, found)) {
        // max_exp_avg_sq is saved only with amsgrad.
        if (std::string(moment) != "max_exp_avg_sq") {
          out.missing.push_back(absl::StrCat("optimizer ", moment, " of ", Quoted(name)));
        }
        continue;
      }
      out.Compare(absl::StrCat("optimizer ", moment, " of ", Quoted(name)), found, parameter,
                  "the parameter");
    }
  }
}

}  // namespace

absl::Status Trainer::SaveCheckpoint(const Position& position, int64_t batches_per_epoch) {
  const std::filesystem::path dir(options_.checkpoint_dir);
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return ErrnoStatus(error.value(),
                       absl::StrCat("cannot create checkpoint directory ", dir.string()));
  }
  torch::serialize::OutputArchive archive;
  archive.write("format_version", torch::tensor(kFormatVersion, torch::kLong));
  archive.write("step", torch::tensor(position.step, torch::kLong));
  archive.write("epoch", torch::tensor(position.epoch, torch::kLong));
  archive.write("batch", torch::tensor(position.batch, torch::kLong));
  archive.write("batches_per_epoch", torch::tensor(batches_per_epoch, torch::kLong));
  archive.write("train_seconds", torch::tensor(position.train_seconds, torch::kDouble));
  archive.write("images", torch::tensor(position.images, torch::kLong));
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
  // Streamed into a durable file (a temporary, flushed, renamed): LibTorch's own file writer
  // aborts the process when a write fails (its destructor throws while the error unwinds), and
  // does not check the close that writes the archive's last bytes, so a full disk ended the run
  // without an error line or left a truncated checkpoint in place. Here LibTorch's writer never
  // sees a failure; the file's writer reports it after the archive is done.
  const std::string path = CheckpointPath(options_.checkpoint_dir);
  if (absl::Status written =
          WriteFileAtomically(path,
                              [&archive](const ByteSink& write) {
                                archive.save_to([&write](const void* data, size_t size) -> size_t {
                                  write(data, size);
                                  return size;
                                });
                              });
      !written.ok()) {
    return absl::Status(written.code(),
                        absl::StrCat("cannot save checkpoint: ", written.message()));
  }
  return absl::OkStatus();
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
    // The phase's training totals; a checkpoint written without them counts from zero.
    torch::Tensor train_seconds;
    torch::Tensor images;
    if (archive.try_read("train_seconds", train_seconds) && archive.try_read("images", images)) {
      if (train_seconds.numel() != 1 || images.numel() != 1) {
        return absl::DataLossError(
            absl::StrCat("cannot resume from checkpoint ", path,
                         ": \"train_seconds\" and \"images\" must be scalars"));
      }
      position.train_seconds = std::max(0.0, train_seconds.item<double>());
      position.images = std::max<int64_t>(0, images.item<int64_t>());
    }
    const int64_t saved_batches = ReadInt(archive, "batches_per_epoch");
    if (saved_batches != batches_per_epoch) {
      return absl::FailedPreconditionError(
          absl::StrCat("checkpoint ", path, " was written with ", saved_batches,
                       " batches per epoch but the training split now has ", batches_per_epoch,
                       "; the loader position cannot be restored"));
    }
    // Everything is checked before anything is loaded: a checkpoint that does not fit the
    // module (a corrupt or hand-edited file) leaves the module, the optimizer and the
    // generators as they were.
    Mismatches mismatches;
    torch::serialize::InputArchive model_archive;
    if (archive.try_read("model", model_archive)) {
      CompareModule(module_, model_archive, "", mismatches);
    } else {
      mismatches.missing.push_back("\"model\"");
    }
    std::map<const void*, std::string> parameter_names;
    for (const auto& parameter : module_.named_parameters()) {
      parameter_names.emplace(parameter.value().unsafeGetTensorImpl(), parameter.key());
    }
    torch::serialize::InputArchive optimizer_archive;
    if (archive.try_read("optimizer", optimizer_archive)) {
      CompareOptimizer(*optimizer_, parameter_names, optimizer_archive, mismatches);
    } else {
      mismatches.missing.push_back("\"optimizer\"");
    }
    // Generator is a handle: the copy shares the default generator's state.
    at::Generator cpu_generator = at::detail::getDefaultCPUGenerator();
    torch::Tensor rng_cpu;
    if (archive.try_read("rng_cpu", rng_cpu)) {
      mismatches.Compare("\"rng_cpu\"", rng_cpu, cpu_generator.get_state(), "the generator");
    } else {
      mismatches.missing.push_back("\"rng_cpu\"");
    }
    std::vector<std::pair<at::Generator, torch::Tensor>> cuda_states;
    if (torch::cuda::is_available()) {
      for (size_t i = 0; i < torch::cuda::device_count(); ++i) {
        const std::string key = absl::StrCat("rng_cuda_", i);
        torch::Tensor state;
        if (!archive.try_read(key, state)) continue;
        const torch::Device device(torch::kCUDA, static_cast<c10::DeviceIndex>(i));
        at::Generator generator = at::globalContext().defaultGenerator(device);
        mismatches.Compare(Quoted(key), state, generator.get_state(), "the generator");
        cuda_states.emplace_back(generator, state);
      }
    }
    if (!mismatches.empty()) {
      return absl::DataLossError(
          absl::StrCat("cannot resume from checkpoint ", path,
                       ": it does not match the model being trained: ", mismatches.ToString()));
    }
    optimizer_->load(optimizer_archive);
    module_.load(model_archive);
    cpu_generator.set_state(rng_cpu.to(torch::kCPU));
    for (auto& [generator, state] : cuda_states) generator.set_state(state.to(torch::kCPU));
  } catch (const c10::Error& error) {
    return absl::DataLossError(
        absl::StrCat("cannot resume from checkpoint ", path, ": ", error.what_without_backtrace()));
  }
  return position;
}

}  // namespace compress::pipeline
