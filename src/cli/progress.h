// A progress bar on stderr for batch jobs: redrawn in place on a terminal, a line every 10% otherwise.
#pragma once

#include <chrono>
#include <cstddef>

namespace kvshare::cli {

class Progress {
 public:
  // `total` things to count, called `unit` ("requests", "completions") in the bar.
  Progress(size_t total, const char* unit, bool enabled);
  void advance();
  void done();

 private:
  void draw(bool final);
  size_t total_, done_ = 0;
  const char* unit_;
  bool enabled_, tty_;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace kvshare::cli
