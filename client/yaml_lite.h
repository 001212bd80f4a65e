// A reader for a small subset of YAML, for job spec files: it turns the text into the
// nlohmann::json value that the equivalent JSON file would parse to.
//
// The subset, one document per file:
//   - block mappings (`key: value`) and block sequences (`- item`, including `- key: value`
//     items), nested by indentation with spaces only;
//   - flow sequences (`[1, 2]`) and flow mappings (`{a: 1}`) of scalars, on one line;
//   - scalars: integers, floats (`0.5`, `1e-3`), `true`/`false`, `null`/`~`/nothing,
//     'single-quoted' ('' is a quote) and "double-quoted" strings (with \n, \t, \", \\, \uXXXX
//     and the other usual escapes), and plain strings;
//   - `#` comments, on their own line or after a value (outside quotes), and a leading `---`.
// Anything else (tabs, anchors and aliases, tags, `|` and `>` block scalars, multi-line
// values, several documents, duplicate keys, inconsistent indentation) is an error.
//
// No library: the project's dependencies are fixed and this subset needs no more than a
// line-based recursive descent.
#ifndef COMPRESS_CLIENT_YAML_LITE_H_
#define COMPRESS_CLIENT_YAML_LITE_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace compress::client {

// Parses `text`, the contents of `file_name`. Mapping keys become JSON object keys (strings);
// an empty document is null. Errors are INVALID_ARGUMENT with the message
// "FILE_NAME:LINE:COLUMN: what was expected" (LINE and COLUMN count from 1).
absl::StatusOr<nlohmann::json> ParseYamlLite(absl::string_view text, absl::string_view file_name);

}  // namespace compress::client

#endif  // COMPRESS_CLIENT_YAML_LITE_H_
