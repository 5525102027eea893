// ProgressBar: one line on a terminal that redraws itself, for operations long enough that
// silence looks like a hang (loading a 14 GB checkpoint, writing one, quantizing one):
//
//   loading weights [##########          ]  50%  7.1/14.2 GB  12 s
//
// It draws only when its stream is a terminal and TERM is not "dumb": logs, pipes and files
// never see it (they get the caller's one-line summaries instead). Thread-safe.
#ifndef XLSTMD_CORE_BASE_PROGRESS_BAR_H_
#define XLSTMD_CORE_BASE_PROGRESS_BAR_H_

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>

namespace xlstmd::base {

class ProgressBar {
 public:
  enum class Units { kBytes, kCount };
  // `allowed` = false turns it off whatever the stream is (e.g. JSON logs on a terminal).
  ProgressBar(std::string label, Units units = Units::kBytes, std::FILE* out = stderr,
              bool allowed = true);
  ~ProgressBar();  // erases the line
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  bool enabled() const { return enabled_; }
  // Redraws with `done` of `total` (at most ten times a second, and always at the end).
  void Update(uint64_t done, uint64_t total);
  // Erases the line so that other output starts on a clean one; the next Update redraws.
  void Clear();

  // The bar's text for `done` of `total` after `seconds` (for tests), without control codes.
  static std::string Render(const std::string& label, Units units, uint64_t done, uint64_t total,
                            double seconds);

 private:
  const std::string label_;
  const Units units_;
  std::FILE* const out_;
  const bool enabled_;
  const std::chrono::steady_clock::time_point start_;
  std::mutex mu_;
  std::chrono::steady_clock::time_point last_draw_{};
  bool drawn_ = false;
};

}  // namespace xlstmd::base

#endif  // XLSTMD_CORE_BASE_PROGRESS_BAR_H_
