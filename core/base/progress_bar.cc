#include "core/base/progress_bar.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"

namespace xlstmd::base {
namespace {

constexpr int kWidth = 20;  // characters of the bar itself

bool IsTerminal(std::FILE* out) {
  if (out == nullptr || ::isatty(::fileno(out)) == 0) return false;
  const char* term = std::getenv("TERM");
  return term == nullptr || std::strcmp(term, "dumb") != 0;
}

std::string Amount(ProgressBar::Units units, uint64_t done, uint64_t total) {
  if (units == ProgressBar::Units::kCount) return absl::StrFormat("%d/%d", done, total);
  const double scale = total >= 1000000000 ? 1e9 : total >= 1000000 ? 1e6 : 1e3;
  const char* unit = total >= 1000000000 ? "GB" : total >= 1000000 ? "MB" : "kB";
  return absl::StrFormat("%.1f/%.1f %s", static_cast<double>(done) / scale,
                         static_cast<double>(total) / scale, unit);
}

}  // namespace

ProgressBar::ProgressBar(std::string label, Units units, std::FILE* out, bool allowed)
    : label_(std::move(label)),
      units_(units),
      out_(out),
      enabled_(allowed && IsTerminal(out)),
      start_(std::chrono::steady_clock::now()) {}

ProgressBar::~ProgressBar() { Clear(); }

std::string ProgressBar::Render(const std::string& label, Units units, uint64_t done,
                                uint64_t total, double seconds) {
  const double frac =
      total == 0 ? 0.0 : std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
  const int filled = static_cast<int>(frac * kWidth);
  return absl::StrFormat("%s [%s%s] %3d%%  %s  %.0f s", label, std::string(filled, '#'),
                         std::string(kWidth - filled, ' '), static_cast<int>(frac * 100),
                         Amount(units, done, total), seconds);
}

void ProgressBar::Update(uint64_t done, uint64_t total) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  if (drawn_ && done < total && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const double seconds = std::chrono::duration<double>(now - start_).count();
  // \r and "erase to end of line": the new text replaces the old whatever their lengths.
  std::fprintf(out_, "\r%s\033[K", Render(label_, units_, done, total, seconds).c_str());
  std::fflush(out_);
  drawn_ = true;
}

void ProgressBar::Clear() {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (!drawn_) return;
  std::fputs("\r\033[K", out_);
  std::fflush(out_);
  drawn_ = false;
}

}  // namespace xlstmd::base
