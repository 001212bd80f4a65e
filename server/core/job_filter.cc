#include "server/core/job_filter.h"

#include <cctype>

#include "absl/strings/str_cat.h"

namespace compress::server {
namespace {

// A hand-written scanner: the grammar is too small for anything more.
class FilterParser {
 public:
  explicit FilterParser(absl::string_view text) : text_(text) {}

  absl::StatusOr<JobFilter> Parse() {
    JobFilter filter;
    SkipSpaces();
    if (AtEnd()) return filter;
    while (true) {
      if (absl::Status s = ParseClause(filter); !s.ok()) return s;
      SkipSpaces();
      if (AtEnd()) return filter;
      std::string word = ReadIdentifier();
      if (word != "AND") return Error(absl::StrCat("expected AND, got '", word, "'"));
      SkipSpaces();
    }
  }

 private:
  bool AtEnd() const { return pos_ >= text_.size(); }

  void SkipSpaces() {
    while (!AtEnd() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }

  // Letters, digits and "_.-/" (label keys may hold dots and slashes).
  std::string ReadIdentifier() {
    size_t start = pos_;
    while (!AtEnd()) {
      char c = text_[pos_];
      if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-' ||
          c == '/') {
        ++pos_;
      } else {
        break;
      }
    }
    return std::string(text_.substr(start, pos_ - start));
  }

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("filter: ", what, " at position ", pos_,
                     " (supported: state = NAME AND labels.KEY = \"VALUE\")"));
  }

  absl::Status ParseClause(JobFilter& filter) {
    size_t clause_start = pos_;
    std::string field = ReadIdentifier();
    if (field.empty()) return Error("expected a field name");
    SkipSpaces();
    if (AtEnd() || text_[pos_] != '=') return Error(absl::StrCat("expected '=' after ", field));
    ++pos_;
    SkipSpaces();
    if (field == "state") {
      std::string name = ReadIdentifier();
      std::optional<JobState> state = JobStateFromName(name);
      if (!state.has_value()) return Error(absl::StrCat("unknown state '", name, "'"));
      if (filter.state.has_value()) {
        pos_ = clause_start;
        return Error("state given twice");
      }
      filter.state = state;
      return absl::OkStatus();
    }
    if (field.rfind("labels.", 0) == 0 && field.size() > 7) {
      if (static_cast<int>(filter.labels.size()) >= kMaxLabels) {
        // No job has more labels, and the store's query grows with every clause.
        pos_ = clause_start;
        return Error(absl::StrCat("more than ", kMaxLabels, " labels clauses (a job has at most ",
                                  kMaxLabels, " labels)"));
      }
      std::string key = field.substr(7);
      if (!IsValidLabelKey(key)) {
        // CreateJob refuses such a key: a filter on it could only match nothing.
        pos_ = clause_start + 7;
        return Error(
            absl::StrCat("label key '", key, "' is not one a job can have (", LabelKeyRule(), ")"));
      }
      absl::StatusOr<std::string> value = ReadQuoted();
      if (!value.ok()) return value.status();
      if (auto [it, inserted] = filter.labels.emplace(key, *value); !inserted) {
        pos_ = clause_start;
        return Error(absl::StrCat("labels.", key, " given twice"));
      }
      return absl::OkStatus();
    }
    pos_ = clause_start;
    return Error(absl::StrCat("unsupported field '", field, "'"));
  }

  absl::StatusOr<std::string> ReadQuoted() {
    if (AtEnd() || text_[pos_] != '"') return Error("expected a double-quoted value");
    ++pos_;
    std::string value;
    while (!AtEnd()) {
      char c = text_[pos_++];
      if (c == '"') return value;
      if (c == '\\') {
        if (AtEnd()) break;
        c = text_[pos_++];
        if (c != '"' && c != '\\') return Error("only \\\" and \\\\ may be escaped");
      }
      value.push_back(c);
    }
    return Error("unterminated string");
  }

  absl::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

bool JobFilter::Matches(const Job& job) const {
  if (state.has_value() && job.state != *state) return false;
  if (tenant.has_value() && job.tenant != *tenant) return false;
  for (const auto& [key, value] : labels) {
    auto it = job.labels.find(key);
    if (it == job.labels.end() || it->second != value) return false;
  }
  return true;
}

absl::StatusOr<JobFilter> ParseJobFilter(absl::string_view text) {
  return FilterParser(text).Parse();
}

}  // namespace compress::server
