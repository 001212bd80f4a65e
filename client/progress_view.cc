#include "client/progress_view.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/output.h"

namespace compress::client {
namespace {

bool IsShownFigure(const std::string& name) {
  return absl::StrContains(name, "loss") || absl::StrContains(name, "acc") ||
         absl::StrContains(name, "top1") || absl::StrContains(name, "top5");
}

}  // namespace

ProgressView::ProgressView(std::ostream* out, bool tty) : out_(out), tty_(tty) {}

std::string ProgressView::Bar(double progress, int width) {
  double p = std::clamp(progress, 0.0, 1.0);
  int filled = static_cast<int>(std::floor(p * width + 1e-9));
  return absl::StrCat("[", std::string(filled, '#'), std::string(width - filled, '-'), "] ",
                      absl::StrFormat("%3d%%", static_cast<int>(std::floor(p * 100 + 1e-9))));
}

std::string ProgressView::Figures(const std::map<std::string, double>& values) {
  std::string text;
  for (const auto& [name, value] : values) {
    if (!IsShownFigure(name)) continue;
    absl::StrAppend(&text, text.empty() ? "" : "  ", name, " ", absl::StrFormat("%.4f", value));
  }
  return text;
}

void ProgressView::Print(const std::string& line) {
  if (line_open_) {
    *out_ << "\r\033[K";
    line_open_ = false;
  }
  *out_ << line << "\n";
  out_->flush();
}

void ProgressView::Close() {
  if (line_open_) {
    *out_ << "\n";
    line_open_ = false;
    out_->flush();
  }
}

void ProgressView::DrawPhase(bool final_line) {
  std::string line = absl::StrFormat("%-8s ", phase_);
  if (final_line) {
    absl::StrAppend(&line, Bar(1.0, 30), absl::StrFormat("  %.1f s", wall_seconds_));
  } else if (progress_ >= 0) {
    absl::StrAppend(&line, Bar(progress_, 30));
  } else {
    absl::StrAppend(&line, "[", std::string(30, ' '), "]    ");
  }
  if (!final_line && step_ > 0) absl::StrAppend(&line, "  step ", step_);
  if (!final_line && epoch_ > 0) absl::StrAppend(&line, absl::StrFormat("  epoch %.2f", epoch_));
  std::string figures = Figures(figures_);
  if (!figures.empty()) absl::StrAppend(&line, "  ", figures);

  if (tty_ && !final_line) {
    *out_ << "\r\033[K" << line;
    line_open_ = true;
    out_->flush();
    return;
  }
  if (!final_line) {
    int tenth = progress_ >= 0 ? static_cast<int>(std::floor(progress_ * 10 + 1e-9)) : 0;
    if (tenth == printed_tenth_) return;
    printed_tenth_ = tenth;
  }
  Print(line);
}

void ProgressView::Show(const compress::v1::JobEvent& event) {
  switch (event.kind_case()) {
    case compress::v1::JobEvent::kStateChange: {
      const compress::v1::StateChange& change = event.state_change();
      std::string line = absl::StrCat("state ", StateName(change.state()));
      if (!change.reason().empty()) absl::StrAppend(&line, ": ", change.reason());
      Print(line);
      break;
    }
    case compress::v1::JobEvent::kPhaseStarted:
      phase_ = event.phase_started().phase();
      progress_ = 0;
      step_ = 0;
      epoch_ = 0;
      printed_tenth_ = -1;
      figures_.clear();
      phase_open_ = true;
      DrawPhase(/*final_line=*/false);
      break;
    case compress::v1::JobEvent::kMetric: {
      const compress::v1::MetricPoint& metric = event.metric();
      if (!metric.phase().empty() && metric.phase() != phase_) {
        phase_ = metric.phase();
        printed_tenth_ = -1;
        figures_.clear();
      }
      if (metric.progress() > 0 || progress_ < 0) progress_ = metric.progress();
      if (metric.step() > 0) step_ = metric.step();
      if (metric.epoch() > 0) epoch_ = metric.epoch();
      for (const auto& [name, value] : metric.values()) figures_[name] = value;
      phase_open_ = true;
      DrawPhase(/*final_line=*/false);
      break;
    }
    case compress::v1::JobEvent::kPhaseFinished: {
      const compress::v1::PhaseEvent& finished = event.phase_finished();
      phase_ = finished.phase();
      wall_seconds_ = finished.wall_seconds();
      for (const auto& [name, value] : finished.values()) figures_[name] = value;
      phase_open_ = false;
      DrawPhase(/*final_line=*/true);
      break;
    }
    case compress::v1::JobEvent::kLog:
      Print(absl::StrCat("[", event.log().level(), "] ", event.log().message()));
      break;
    case compress::v1::JobEvent::kArtifact:
      Print(absl::StrCat("artifact ", event.artifact().name(), " (",
                         HumanBytes(event.artifact().size_bytes()), ", sha256 ",
                         event.artifact().sha256(), ")"));
      break;
    case compress::v1::JobEvent::KIND_NOT_SET:
      break;
  }
  // Redraw the phase's line under a log or state line on a terminal.
  if (tty_ && !line_open_ && phase_open_ && event.kind_case() == compress::v1::JobEvent::kLog) {
    DrawPhase(/*final_line=*/false);
  }
}

}  // namespace compress::client
