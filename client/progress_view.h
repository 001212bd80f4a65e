// ProgressView: renders a job's events for `compressctl watch`: one progress line per phase (a
// text bar from the metric's progress, with loss and accuracy figures as they come), state
// changes, logs and artifacts.
#ifndef COMPRESS_CLIENT_PROGRESS_VIEW_H_
#define COMPRESS_CLIENT_PROGRESS_VIEW_H_

#include <map>
#include <ostream>
#include <string>

#include "compress/v1/compression_service.pb.h"

namespace compress::client {

// Not thread-safe.
class ProgressView {
 public:
  // On a terminal (`tty`) the phase's line is redrawn in place; otherwise a new line is written
  // each time the progress passes another tenth, and when the phase ends. `out` is not owned.
  ProgressView(std::ostream* out, bool tty);

  void Show(const compress::v1::JobEvent& event);
  // Ends a line left open on a terminal.
  void Close();

  // The text bar for `progress` in [0, 1]: "[#####-----]  50%".
  static std::string Bar(double progress, int width);
  // The figures worth showing from a metric's values: losses and accuracies, in name order
  // ("loss 0.4312  top1 0.8120").
  static std::string Figures(const std::map<std::string, double>& values);

 private:
  void DrawPhase(bool final_line);
  void Print(const std::string& line);

  std::ostream* const out_;
  const bool tty_;
  bool line_open_ = false;
  // The phase being shown and what is known about it.
  std::string phase_;
  bool phase_open_ = false;  // started and not yet finished
  double progress_ = -1;
  int64_t step_ = 0;
  double epoch_ = 0;
  int printed_tenth_ = -1;
  std::map<std::string, double> figures_;
  double wall_seconds_ = 0;
};

}  // namespace compress::client

#endif  // COMPRESS_CLIENT_PROGRESS_VIEW_H_
