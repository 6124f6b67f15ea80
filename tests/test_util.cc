#include "test_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <vector>

#include "core/mapped_file.h"

namespace kvshare::testing {

namespace {
// $NAME when set, else the value the build configured.
std::string setting(const char* name, const char* fallback) {
  const char* env = std::getenv(name);
  return env != nullptr && *env != '\0' ? env : fallback;
}
}  // namespace

std::string shared_dir() {
  const std::string dir = setting("KVSHARE_SHARED_DIR", KVSHARE_SHARED_DIR_DEFAULT);
  if (dir.empty() || !file_exists(dir)) return "";
  return std::filesystem::canonical(dir).string();
}

std::string source_dir() { return setting("KVSHARE_SOURCE_DIR", KVSHARE_SOURCE_DIR_DEFAULT); }

std::string kvshare_binary() { return setting("KVSHARE_BIN", KVSHARE_BIN_DEFAULT); }

std::string gpt2_tokenizer_dir() {
  const std::string deps = source_dir() + "/.deps/gpt2-tokenizer";
  if (file_exists(deps + "/encoder.json")) return deps;
  const std::string shared = shared_dir();
  if (!shared.empty() && file_exists(shared + "/tokenizers/gpt2/vocab.json")) return shared + "/tokenizers/gpt2";
  return "";
}

namespace {
// Removes this process's scratch folders when it exits, so repeated test runs do not pile up gigabytes.
// Set KVSHARE_KEEP_TEST_TMP=1 to keep them for a look after a failure.
struct ScratchCleanup {
  std::vector<std::filesystem::path> dirs;
  ~ScratchCleanup() {
    const char* keep = std::getenv("KVSHARE_KEEP_TEST_TMP");
    if (keep != nullptr && *keep != '\0' && *keep != '0') return;
    std::error_code ec;
    for (const auto& d : dirs) std::filesystem::remove_all(d, ec);
  }
};
ScratchCleanup& scratch_cleanup() {
  static ScratchCleanup cleanup;
  return cleanup;
}
}  // namespace

double sanitizer_slowdown() {
#if defined(__SANITIZE_ADDRESS__)
  return 5.0;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  return 5.0;
#else
  return 1.0;
#endif
#else
  return 1.0;
#endif
}

std::string temp_dir(const std::string& name) {
  std::filesystem::path p =
      std::filesystem::path(setting("KVSHARE_BINARY_DIR", KVSHARE_BINARY_DIR_DEFAULT)) / "test_tmp" /
      (name + "." + std::to_string(::getpid()));  // ctest runs tests in parallel processes
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  scratch_cleanup().dirs.push_back(p);
  return p.string();
}

Status status_without_blocking_on_fifo(const std::string& fifo, const std::function<Status()>& load, int seconds) {
  std::future<Status> done = std::async(std::launch::async, load);
  if (done.wait_for(std::chrono::seconds(seconds)) == std::future_status::ready) return done.get();
  ADD_FAILURE() << "loading " << fifo << " still blocks after " << seconds << " s (open() waits for a writer)";
  // With a reader waiting, a non-blocking open of the write end succeeds and releases it.
  const int writer = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
  Status status = done.get();
  if (writer >= 0) ::close(writer);
  return status;
}

int64_t resident_bytes() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return -1;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
  return -1;
#endif
#endif
  std::ifstream in("/proc/self/statm");
  int64_t size = 0, resident = 0;
  if (!(in >> size >> resident)) return -1;
  return resident * sysconf(_SC_PAGESIZE);
}

}  // namespace kvshare::testing
