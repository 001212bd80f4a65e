#include "client/yaml_lite.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace compress::client {
namespace {

using Json = nlohmann::json;

// A line with content; blank and comment-only lines are dropped before parsing.
struct Line {
  int number = 0;     // counted from 1
  std::string text;   // without the line break
  size_t indent = 0;  // leading spaces
};

// The one-character escapes of double-quoted strings and the characters they stand for.
constexpr std::pair<char, char> kEscapes[] = {
    {'0', '\0'}, {'a', '\a'},   {'b', '\b'}, {'t', '\t'}, {'n', '\n'}, {'v', '\v'}, {'f', '\f'},
    {'r', '\r'}, {'e', '\x1b'}, {' ', ' '},  {'"', '"'},  {'/', '/'},  {'\\', '\\'}};

// Plain (unquoted) scalars end at different characters inside `[...]`/`{...}`.
enum class Context { kBlock, kFlow };

// The index of the first byte of `s` that is not part of valid UTF-8, or npos. JSON (and
// nlohmann::json's serializer) needs valid UTF-8.
size_t InvalidUtf8At(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t length = 0;
    unsigned char low = 0x80, high = 0xBF;  // the range of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      length = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      length = 3;
      if (c == 0xE0) low = 0xA0;   // no overlong forms
      if (c == 0xED) high = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      length = 4;
      if (c == 0xF0) low = 0x90;
      if (c == 0xF4) high = 0x8F;  // nothing above U+10FFFF
    } else {
      return i;
    }
    if (i + length > s.size()) return i;
    for (size_t k = 1; k < length; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if (k == 1 ? (b < low || b > high) : (b & 0xC0) != 0x80) return i;
    }
    i += length;
  }
  return absl::string_view::npos;
}

void AppendUtf8(uint32_t code_point, std::string* out) {
  if (code_point < 0x80) {
    out->push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

// Plain scalars that are numbers, after YAML 1.2's core schema (hexadecimal and octal left out).
bool IsInteger(absl::string_view s) {
  static const auto* const kInteger = new std::regex("[-+]?[0-9]+");
  return std::regex_match(s.begin(), s.end(), *kInteger);
}

// YAML 1.2's not-a-number and infinities, which JSON (and so a job spec) cannot hold.
bool IsNonFinite(absl::string_view s) {
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) s.remove_prefix(1);
  return s == ".nan" || s == ".NaN" || s == ".NAN" || s == ".inf" || s == ".Inf" || s == ".INF";
}

bool IsFloat(absl::string_view s) {
  static const auto* const kFloat =
      new std::regex(R"([-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?)");
  return std::regex_match(s.begin(), s.end(), *kFloat);
}

// Recursive descent over the content lines. Block nodes are found by indentation; a line's
// inline part (a key, a scalar, a flow collection) is scanned with a position into its text.
class Parser {
 public:
  explicit Parser(absl::string_view file_name) : file_name_(file_name) {}

  absl::Status Parse(absl::string_view text, Json* out) {
    if (absl::Status status = SplitLines(text); !status.ok()) return status;
    if (lines_.empty()) {
      *out = nullptr;
      return absl::OkStatus();
    }
    const Line& top = lines_.front();
    if (absl::Status status = ParseNode(top.indent, out); !status.ok()) return status;
    if (next_ < lines_.size()) {
      const Line& extra = lines_[next_];
      if (extra.indent != top.indent) return Inconsistent(extra, top.indent);
      return Error(extra, extra.indent,
                   "expected the end of the document: a document is a single value");
    }
    return absl::OkStatus();
  }

 private:
  // `pos` counts from 0; the message counts columns from 1.
  absl::Status Error(const Line& line, size_t pos, absl::string_view message) const {
    return absl::InvalidArgumentError(
        absl::StrCat(file_name_, ":", line.number, ":", pos + 1, ": ", message));
  }

  absl::Status Inconsistent(const Line& line, size_t expected) const {
    return Error(line, line.indent,
                 absl::StrCat("inconsistent indentation: expected ", expected, " spaces, found ",
                              line.indent));
  }

  static char At(const Line& line, size_t pos) {
    return pos < line.text.size() ? line.text[pos] : '\0';
  }

  // True at the end of the line or at a comment: '#' after a space (or alone on the line).
  static bool AtLineEnd(const Line& line, size_t pos) {
    return pos >= line.text.size() ||
           (line.text[pos] == '#' && (pos == 0 || line.text[pos - 1] == ' '));
  }

  static bool IsSequenceItemAt(const Line& line, size_t pos) {
    return At(line, pos) == '-' && (pos + 1 == line.text.size() || At(line, pos + 1) == ' ');
  }

  absl::Status SkipSpaces(const Line& line, size_t* pos) const {
    while (At(line, *pos) == ' ') ++*pos;
    if (At(line, *pos) == '\t') return Error(line, *pos, "tab character: use spaces");
    return absl::OkStatus();
  }

  absl::Status ExpectLineEnd(const Line& line, size_t pos, absl::string_view after) const {
    if (absl::Status status = SkipSpaces(line, &pos); !status.ok()) return status;
    if (AtLineEnd(line, pos)) return absl::OkStatus();
    return Error(line, pos,
                 absl::StrCat("expected the end of the line after ", after, ", found '",
                              std::string(1, line.text[pos]), "'"));
  }

  absl::Status SplitLines(absl::string_view text) {
    if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // a byte order mark
    int number = 0;
    for (absl::string_view raw : absl::StrSplit(text, '\n')) {
      ++number;
      if (!raw.empty() && raw.back() == '\r') raw.remove_suffix(1);
      Line line{number, std::string(raw), 0};
      if (size_t bad = InvalidUtf8At(raw); bad != absl::string_view::npos) {
        return Error(line, bad, "invalid UTF-8");
      }
      const size_t content = raw.find_first_not_of(" \t");
      if (content == absl::string_view::npos || raw[content] == '#') continue;
      line.indent = raw.find_first_not_of(' ');
      if (raw[line.indent] == '\t') {
        return Error(line, line.indent, "tab character in the indentation: indent with spaces");
      }
      lines_.push_back(std::move(line));
    }
    // Document markers: "---" may open the document; "..." and a second "---" are not read.
    bool opens_with_marker = false;
    for (size_t i = 0; i < lines_.size(); ++i) {
      const Line& line = lines_[i];
      if (line.indent == 0 && line.text[0] == '%') {
        return Error(line, 0, "directives ('%') are not supported");
      }
      const absl::string_view head = absl::string_view(line.text).substr(0, 3);
      const char after = At(line, 3);
      if (line.indent != 0 || (head != "---" && head != "...") ||
          (after != '\0' && after != ' ' && after != '\t')) {
        continue;  // "---x" is a plain scalar
      }
      if (head == "...") return Error(line, 0, "the document end marker '...' is not supported");
      if (i > 0) {
        return Error(line, 0, "a second document ('---') is not supported: one document per file");
      }
      if (absl::Status status = ExpectLineEnd(line, 3, "'---'"); !status.ok()) return status;
      opens_with_marker = true;
    }
    if (opens_with_marker) lines_.erase(lines_.begin());
    return absl::OkStatus();
  }

  // Rejects what the subset leaves out, at the start of a key or value.
  absl::Status CheckNodeStart(const Line& line, size_t pos) const {
    const char c = At(line, pos);
    const char next = At(line, pos + 1);
    switch (c) {
      case '&':
        return Error(line, pos, "anchors ('&') are not supported");
      case '*':
        return Error(line, pos, "aliases ('*') are not supported");
      case '!':
        return Error(line, pos, "tags ('!') are not supported");
      case '|':
      case '>':
        return Error(line, pos,
                     "block scalars ('|', '>') are not supported: write the value on one line, "
                     "in quotes if needed");
      case '%':
        return Error(line, pos, "directives ('%') are not supported");
      case '@':
      case '`':
        return Error(line, pos,
                     absl::StrCat("'", std::string(1, c),
                                  "' is reserved: quote a value that starts with it"));
      case '?':
        if (next == ' ' || next == '\0') {
          return Error(line, pos, "complex keys ('? ') are not supported");
        }
        break;
      case '-':
        if (next == ' ' || next == '\0') {
          return Error(line, pos,
                       "a sequence item ('- ') cannot start here: put it on a line "
                       "of its own");
        }
        break;
      case ',':
      case ']':
      case '}':
        return Error(line, pos, absl::StrCat("expected a value, found '", std::string(1, c), "'"));
      default:
        break;
    }
    return absl::OkStatus();
  }

  // Scans a plain scalar from `pos`; `*end` is one past its last non-space character.
  absl::Status ScanPlain(const Line& line, size_t pos, Context context, size_t* end) const {
    *end = pos;
    for (size_t i = pos; i < line.text.size(); ++i) {
      const char c = line.text[i];
      const char next = At(line, i + 1);
      if (c == '\t') return Error(line, i, "tab character: use spaces");
      if (c == ' ') {
        if (next == '#') break;  // a comment
        continue;
      }
      if (c == ':' &&
          (next == '\0' || next == ' ' ||
           (context == Context::kFlow && (next == ',' || next == ']' || next == '}')))) {
        break;  // a key's ':'
      }
      if (context == Context::kFlow && (c == ',' || c == '[' || c == ']' || c == '{' || c == '}')) {
        break;
      }
      *end = i + 1;
    }
    return absl::OkStatus();
  }

  // A quoted scalar starting at `*pos` (its quote); `*pos` ends past the closing quote.
  absl::Status ParseQuoted(const Line& line, size_t* pos, std::string* out) const {
    const char quote = line.text[*pos];
    const size_t open = *pos;
    out->clear();
    size_t i = open + 1;
    while (true) {
      if (i >= line.text.size()) {
        return Error(line, open,
                     absl::StrCat("unterminated ", quote == '"' ? "double" : "single",
                                  "-quoted string: expected the closing quote on the same line "
                                  "(multi-line strings are not supported)"));
      }
      const char c = line.text[i];
      if (c == quote) {
        if (quote == '\'' && At(line, i + 1) == '\'') {  // '' is a single quote
          out->push_back('\'');
          i += 2;
          continue;
        }
        *pos = i + 1;
        return absl::OkStatus();
      }
      if (quote == '"' && c == '\\') {
        if (absl::Status status = ParseEscape(line, &i, out); !status.ok()) return status;
        continue;
      }
      out->push_back(c);
      ++i;
    }
  }

  // The escape at `*pos` (its backslash) in a double-quoted string; `*pos` ends past it.
  absl::Status ParseEscape(const Line& line, size_t* pos, std::string* out) const {
    const size_t start = *pos;
    const char e = At(line, start + 1);
    for (const auto& [name, value] : kEscapes) {
      if (e == name) {
        out->push_back(value);
        *pos = start + 2;
        return absl::OkStatus();
      }
    }
    const size_t hex_digits = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
    if (e == '\0') {
      return Error(line, start,
                   "unterminated double-quoted string: expected the closing quote on the same "
                   "line (multi-line strings are not supported)");
    }
    if (hex_digits == 0) {
      return Error(
          line, start,
          absl::StrCat("unknown escape '\\", std::string(1, e), "' in a double-quoted string"));
    }
    *pos = start + 2;
    uint32_t code_point = 0;
    for (size_t k = 0; k < hex_digits; ++k) {
      const char h = At(line, *pos + k);
      int digit = -1;
      if (h >= '0' && h <= '9') digit = h - '0';
      if (h >= 'a' && h <= 'f') digit = h - 'a' + 10;
      if (h >= 'A' && h <= 'F') digit = h - 'A' + 10;
      if (digit < 0) {
        return Error(line, *pos + k,
                     absl::StrCat("expected ", hex_digits, " hexadecimal digits after '\\",
                                  std::string(1, e), "'"));
      }
      code_point = code_point * 16 + static_cast<uint32_t>(digit);
    }
    if (code_point > 0x10FFFF || (code_point >= 0xD800 && code_point <= 0xDFFF)) {
      return Error(line, start,
                   "the escape is not a Unicode scalar value (U+0000..U+10FFFF, "
                   "no surrogates)");
    }
    AppendUtf8(code_point, out);
    *pos += hex_digits;
    return absl::OkStatus();
  }

  // The value of a plain scalar: null, a boolean, an integer, a float or a string.
  absl::Status ResolvePlain(const Line& line, size_t pos, absl::string_view s, Json* out) const {
    if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") {
      *out = nullptr;
    } else if (s == "true" || s == "True" || s == "TRUE") {
      *out = true;
    } else if (s == "false" || s == "False" || s == "FALSE") {
      *out = false;
    } else if (IsInteger(s)) {
      int64_t signed_value = 0;
      uint64_t unsigned_value = 0;
      double double_value = 0;
      if (absl::SimpleAtoi(s, &signed_value)) {
        *out = signed_value;
      } else if (absl::SimpleAtoi(s, &unsigned_value)) {
        *out = unsigned_value;
      } else if (absl::SimpleAtod(s, &double_value) && std::isfinite(double_value)) {
        *out = double_value;  // as a JSON parser reads an integer past 64 bits
      } else {
        return Error(line, pos, "the number is out of range");
      }
    } else if (IsNonFinite(s)) {
      return Error(line, pos, absl::StrCat("'", s, "': must be a finite number"));
    } else if (IsFloat(s)) {
      double value = 0;
      if (!absl::SimpleAtod(s, &value) || !std::isfinite(value)) {
        return Error(line, pos, "the number is out of range");
      }
      *out = value;
    } else {
      *out = std::string(s);
    }
    return absl::OkStatus();
  }

  // A scalar inside a flow collection; a key is kept as written (JSON keys are strings).
  absl::Status ParseFlowScalar(const Line& line, size_t* pos, bool is_key, Json* out) const {
    const char c = At(line, *pos);
    if (c == '[' || c == '{') {
      return Error(line, *pos, "nested flow collections are not supported");
    }
    if (c == '"' || c == '\'') {
      std::string value;
      if (absl::Status status = ParseQuoted(line, pos, &value); !status.ok()) return status;
      *out = std::move(value);
      return absl::OkStatus();
    }
    if (absl::Status status = CheckNodeStart(line, *pos); !status.ok()) return status;
    size_t end = *pos;
    if (absl::Status status = ScanPlain(line, *pos, Context::kFlow, &end); !status.ok()) {
      return status;
    }
    if (end == *pos) return Error(line, *pos, is_key ? "expected a key" : "expected a value");
    const absl::string_view text = absl::string_view(line.text).substr(*pos, end - *pos);
    const size_t start = *pos;
    *pos = end;
    if (is_key) {
      *out = std::string(text);
      return absl::OkStatus();
    }
    return ResolvePlain(line, start, text, out);
  }

  absl::Status Unterminated(const Line& line, size_t open, char close) const {
    return Error(line, open,
                 absl::StrCat("unterminated flow collection: expected '", std::string(1, close),
                              "' on the same line (flow collections cannot span lines)"));
  }

  // `[a, b]` or `{k: v}` of scalars, on one line, starting at `*pos` (its bracket); `*pos`
  // ends past the closing bracket.
  absl::Status ParseFlowCollection(const Line& line, size_t* pos, Json* out) const {
    const size_t open = (*pos)++;
    const bool is_mapping = line.text[open] == '{';
    const char close = is_mapping ? '}' : ']';
    const char* const what = is_mapping ? "flow mapping" : "flow sequence";
    *out = is_mapping ? Json::object() : Json::array();
    while (true) {
      if (absl::Status status = SkipSpaces(line, pos); !status.ok()) return status;
      if (AtLineEnd(line, *pos)) return Unterminated(line, open, close);
      if (At(line, *pos) == close) break;  // empty, or after a trailing ','
      const size_t item_pos = *pos;
      Json item;
      if (absl::Status status = ParseFlowScalar(line, pos, is_mapping, &item); !status.ok()) {
        return status;
      }
      if (!is_mapping) {
        out->push_back(std::move(item));
      } else {
        const std::string key = item.get<std::string>();
        if (absl::Status status = SkipSpaces(line, pos); !status.ok()) return status;
        if (At(line, *pos) != ':') {
          return Error(line, *pos,
                       absl::StrCat("expected ': ' after the key \"", key, "\" in the ", what));
        }
        ++*pos;
        if (absl::Status status = SkipSpaces(line, pos); !status.ok()) return status;
        Json value;  // null when nothing follows the ':'
        if (At(line, *pos) != ',' && At(line, *pos) != close && !AtLineEnd(line, *pos)) {
          if (absl::Status status = ParseFlowScalar(line, pos, /*is_key=*/false, &value);
              !status.ok()) {
            return status;
          }
        }
        if (out->contains(key)) {
          return Error(line, item_pos, absl::StrCat("duplicate key \"", key, "\""));
        }
        (*out)[key] = std::move(value);
      }
      if (absl::Status status = SkipSpaces(line, pos); !status.ok()) return status;
      if (AtLineEnd(line, *pos)) return Unterminated(line, open, close);
      if (At(line, *pos) == close) break;
      if (At(line, *pos) != ',') {
        return Error(line, *pos,
                     absl::StrCat("expected ',' or '", std::string(1, close), "' in the ", what,
                                  ", found '", std::string(1, At(line, *pos)), "'"));
      }
      ++*pos;
    }
    ++*pos;  // the closing bracket
    return absl::OkStatus();
  }

  // A value that starts at `pos` and ends the line: a flow collection or a scalar.
  absl::Status ParseInlineValue(const Line& line, size_t pos, Json* out) const {
    if (absl::Status status = CheckNodeStart(line, pos); !status.ok()) return status;
    const char c = At(line, pos);
    absl::Status status;
    if (c == '[' || c == '{') {
      status = ParseFlowCollection(line, &pos, out);
    } else if (c == '"' || c == '\'') {
      std::string value;
      status = ParseQuoted(line, &pos, &value);
      *out = std::move(value);
    } else {
      size_t end = pos;
      status = ScanPlain(line, pos, Context::kBlock, &end);
      if (!status.ok()) return status;
      status = ResolvePlain(line, pos, absl::string_view(line.text).substr(pos, end - pos), out);
      pos = end;
    }
    if (!status.ok()) return status;
    size_t after = pos;
    if (status = SkipSpaces(line, &after); !status.ok()) return status;
    if (At(line, after) == ':') {
      return Error(line, after,
                   "a mapping cannot start here: put a nested mapping on lines of its own");
    }
    return ExpectLineEnd(line, pos, "the value");
  }

  // The key of a block mapping entry at `pos`; `*after` is the position past its ':'.
  absl::Status ParseKey(const Line& line, size_t pos, std::string* key, size_t* after) const {
    const char c = At(line, pos);
    size_t end = pos;
    if (c == '"' || c == '\'') {
      if (absl::Status status = ParseQuoted(line, &end, key); !status.ok()) return status;
    } else {
      if (c == '[' || c == '{') {
        return Error(line, pos, "expected a key: a flow collection cannot be a key");
      }
      if (absl::Status status = CheckNodeStart(line, pos); !status.ok()) return status;
      if (absl::Status status = ScanPlain(line, pos, Context::kBlock, &end); !status.ok()) {
        return status;
      }
      if (end == pos) return Error(line, pos, "expected a key before ':'");
      *key = line.text.substr(pos, end - pos);
    }
    if (absl::Status status = SkipSpaces(line, &end); !status.ok()) return status;
    if (At(line, end) != ':') {
      return Error(line, end,
                   absl::StrCat("expected ':' after the key \"", *key,
                                "\" (a mapping entry is 'key: value')"));
    }
    *after = end + 1;
    return absl::OkStatus();
  }

  // The block node whose first line is lines_[next_], indented by `indent`.
  absl::Status ParseNode(size_t indent, Json* out) {
    const Line& line = lines_[next_];
    if (IsSequenceItemAt(line, indent)) return ParseSequence(indent, /*ends_at_key=*/false, out);
    std::string key;
    size_t after = 0;
    if (ParseKey(line, indent, &key, &after).ok()) return ParseMapping(indent, out);
    // A scalar or a flow collection on a line of its own.
    if (absl::Status status = ParseInlineValue(line, indent, out); !status.ok()) return status;
    ++next_;
    return absl::OkStatus();
  }

  // The value of a `key:` or `-` with nothing after it on its line: the more indented block
  // that follows, a sequence at the key's own indentation, or null.
  absl::Status ParseNestedValue(size_t parent_indent, bool is_key_value, Json* out) {
    if (next_ < lines_.size()) {
      const Line& line = lines_[next_];
      if (line.indent > parent_indent) return ParseNode(line.indent, out);
      if (is_key_value && line.indent == parent_indent && IsSequenceItemAt(line, line.indent)) {
        return ParseSequence(parent_indent, /*ends_at_key=*/true, out);
      }
    }
    *out = nullptr;
    return absl::OkStatus();
  }

  // Items at `indent`. `ends_at_key`: the sequence is the value of a key at the same
  // indentation, so a line without '- ' there is the mapping's next key.
  absl::Status ParseSequence(size_t indent, bool ends_at_key, Json* out) {
    *out = Json::array();
    while (next_ < lines_.size()) {
      Line& line = lines_[next_];
      if (line.indent < indent) break;
      if (line.indent > indent) return Inconsistent(line, indent);
      if (!IsSequenceItemAt(line, indent)) {
        if (ends_at_key) break;
        return Error(line, indent, "expected a sequence item ('- ') at this indentation");
      }
      size_t pos = indent + 1;
      if (absl::Status status = SkipSpaces(line, &pos); !status.ok()) return status;
      Json item;
      absl::Status status;
      std::string key;
      size_t after = 0;
      if (AtLineEnd(line, pos)) {
        ++next_;
        status = ParseNestedValue(indent, /*is_key_value=*/false, &item);
      } else if (IsSequenceItemAt(line, pos) || ParseKey(line, pos, &key, &after).ok()) {
        // `- key: value` or `- - item`: a block node that starts after the "- ". Blanking
        // the '-' makes the line that node's first line, indented to where it starts.
        line.text[indent] = ' ';
        line.indent = pos;
        status = ParseNode(pos, &item);
      } else {
        status = ParseInlineValue(line, pos, &item);
        ++next_;
      }
      if (!status.ok()) return status;
      out->push_back(std::move(item));
    }
    return absl::OkStatus();
  }

  absl::Status ParseMapping(size_t indent, Json* out) {
    *out = Json::object();
    std::map<std::string, int> first_line;  // key -> the line that set it
    while (next_ < lines_.size()) {
      const Line& line = lines_[next_];
      if (line.indent < indent) break;
      if (line.indent > indent) return Inconsistent(line, indent);
      if (IsSequenceItemAt(line, indent)) {
        return Error(line, indent, "expected 'key: value', found a sequence item ('- ')");
      }
      std::string key;
      size_t pos = 0;
      if (absl::Status status = ParseKey(line, indent, &key, &pos); !status.ok()) return status;
      if (auto [it, inserted] = first_line.emplace(key, line.number); !inserted) {
        return Error(line, indent,
                     absl::StrCat("duplicate key \"", key, "\" (first on line ", it->second, ")"));
      }
      if (absl::Status status = SkipSpaces(line, &pos); !status.ok()) return status;
      Json value;
      absl::Status status;
      if (AtLineEnd(line, pos)) {
        ++next_;
        status = ParseNestedValue(indent, /*is_key_value=*/true, &value);
      } else {
        status = ParseInlineValue(line, pos, &value);
        ++next_;
      }
      if (!status.ok()) return status;
      (*out)[key] = std::move(value);
    }
    return absl::OkStatus();
  }

  const std::string file_name_;
  std::vector<Line> lines_;  // the content lines; ParseSequence rewrites "- " items in place
  size_t next_ = 0;          // the first line not yet parsed
};

}  // namespace

absl::StatusOr<nlohmann::json> ParseYamlLite(absl::string_view text, absl::string_view file_name) {
  Parser parser(file_name);
  Json out;
  if (absl::Status status = parser.Parse(text, &out); !status.ok()) return status;
  return out;
}

}  // namespace compress::client
