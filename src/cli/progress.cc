#include "cli/progress.h"

#include <unistd.h>

#include <cstdio>

namespace kvshare::cli {

Progress::Progress(size_t total, const char* unit, bool enabled)
    : total_(total), unit_(unit), enabled_(enabled && total > 0), tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()) {}

void Progress::advance() {
  ++done_;
  draw(false);
}

void Progress::done() {
  if (enabled_ && tty_) std::fputc('\n', stderr);
}

void Progress::draw(bool final) {
  if (!enabled_) return;
  const double frac = static_cast<double>(done_) / static_cast<double>(total_);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (tty_) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(frac * kWidth);
    char bar[kWidth + 1];
    for (int i = 0; i < kWidth; ++i) bar[i] = i < filled ? '#' : '.';
    bar[kWidth] = '\0';
    std::fprintf(stderr, "\r[%s] %zu/%zu %s  %.1f s", bar, done_, total_, unit_, secs);
    std::fflush(stderr);
  } else {
    const int decile = static_cast<int>(frac * 10);
    if (decile != last_decile_ || final) {
      last_decile_ = decile;
      std::fprintf(stderr, "progress: %zu/%zu %s, %.1f s\n", done_, total_, unit_, secs);
    }
  }
}

}  // namespace kvshare::cli
