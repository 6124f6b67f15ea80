// What the fuzz targets share: a scratch folder for inputs that the code under test reads from files, splitting
// one input into several files, and the checks a loaded tensor store must pass. See docs/fuzzing.md.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "formats/tensor_store.h"

namespace kvshare::fuzz {

// A finding: prints what failed and aborts, so libFuzzer saves the input as a crash.
[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz check failed: %s\n", what.c_str());
  std::abort();
}
inline void check(bool ok, const std::string& what) {
  if (!ok) fail(what);
}

// An error must be a Status with a code and a message that says what was wrong.
inline void check_error(const Status& st, const char* where) {
  check(!st.ok(), std::string(where) + ": expected an error");
  check(!st.message().empty(), std::string(where) + ": an error without a message");
}

// A folder of this process's own (in /dev/shm when there is one, so writing an input costs no disk), removed at
// exit.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::error_code ec;
    std::filesystem::path base = std::filesystem::is_directory("/dev/shm", ec) ? std::filesystem::path("/dev/shm")
                                                                                : std::filesystem::temp_directory_path();
    std::filesystem::path d = base / ("kvshare-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    static const struct Cleanup {
      std::filesystem::path path;
      ~Cleanup() {
        std::error_code e;
        std::filesystem::remove_all(path, e);
      }
    } cleanup{d};
    return d;
  }();
  return dir;
}

// Writes `bytes` to scratch_dir()/name and returns its path.
inline std::string write_scratch(const std::string& name, std::string_view bytes) {
  const std::filesystem::path path = scratch_dir() / name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) fail("cannot write the scratch file " + path.string());
  return path.string();
}

inline void remove_scratch(const std::string& name) {
  std::error_code ec;
  std::filesystem::remove(scratch_dir() / name, ec);
}

// Cuts an input into at most `max_parts` parts at each "\n--8<--\n" (the corpora's files are written this way).
inline constexpr std::string_view kSeparator = "\n--8<--\n";
inline std::vector<std::string_view> split_parts(const uint8_t* data, size_t size, size_t max_parts) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < max_parts) {
    const size_t at = rest.find(kSeparator);
    if (at == std::string_view::npos) break;
    parts.push_back(rest.substr(0, at));
    rest.remove_prefix(at + kSeparator.size());
  }
  parts.push_back(rest);
  return parts;
}

// Every tensor of a loaded store: dimensions non-negative, shape x dtype without overflow, no larger than the
// file(s) it came from (`max_bytes`), data aligned to its element size, and every byte readable (a view past a
// mapping's end faults here; ASan reports one past a buffer's end).
inline void check_store(const TensorStore& store, uint64_t max_bytes) {
  for (const auto& [name, view] : store.tensors()) {
    uint64_t elements = 1;
    for (int64_t d : view.shape) {
      check(d >= 0, name + ": a negative dimension");
      check(!__builtin_mul_overflow(elements, static_cast<uint64_t>(d), &elements), name + ": shape overflows");
    }
    check(elements <= max_bytes, name + ": " + std::to_string(elements) + " elements from a file of " +
                                     std::to_string(max_bytes) + " bytes");
    const uint64_t bytes = view.num_bytes();
    check(bytes <= max_bytes, name + ": " + std::to_string(bytes) + " bytes from a file of " +
                                  std::to_string(max_bytes));
    if (bytes == 0) continue;
    check(view.data != nullptr, name + ": no data");
    const size_t align = dtype_bytes(view.dtype, 1) > 0 && view.dtype != DType::kQ8_0 ? dtype_bytes(view.dtype, 1) : 1;
    check(reinterpret_cast<uintptr_t>(view.data) % align == 0, name + ": data not aligned to its element size");
    const volatile uint8_t* p = static_cast<const uint8_t*>(view.data);
    uint8_t sum = 0;
    for (uint64_t i = 0; i < bytes; ++i) sum = static_cast<uint8_t>(sum + p[i]);
    (void)sum;
  }
}

}  // namespace kvshare::fuzz
