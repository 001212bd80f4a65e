// Turns LibTorch's exceptions into absl::Status at the pipeline's edges (house rule: no
// exception crosses a pipeline API).
#ifndef COMPRESS_WORKER_PIPELINE_MODEL_TORCH_ERROR_H_
#define COMPRESS_WORKER_PIPELINE_MODEL_TORCH_ERROR_H_

#include <c10/util/Exception.h>

#include <exception>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace compress::pipeline {

// RESOURCE_EXHAUSTED for an out-of-memory error, INTERNAL for any other c10::Error. `context`
// says what was being done ("loading model.safetensors"). The message keeps LibTorch's first
// line only (the rest is a C++ backtrace).
inline absl::Status StatusFromTorchError(const c10::Error& error, std::string_view context) {
  std::string_view message = error.what_without_backtrace();
  if (const size_t end = message.find('\n'); end != std::string_view::npos) {
    message = message.substr(0, end);
  }
  if (dynamic_cast<const c10::OutOfMemoryError*>(&error) != nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat(std::string(context), ": out of memory: ", std::string(message)));
  }
  return absl::InternalError(absl::StrCat(std::string(context), ": ", std::string(message)));
}

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_MODEL_TORCH_ERROR_H_
