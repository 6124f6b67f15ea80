// Internal helpers shared by the format readers and writers: a bounds-checked little-endian reader over a
// mapped file, overflow-checked size arithmetic, and a file writer that reports every failed write.
// Not part of the formats API; include only from src/formats/*.cc.
#pragma once

#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"

namespace kvshare::formats_internal {

static_assert(std::endian::native == std::endian::little, "the format readers assume a little-endian host");

// Reads little-endian values from [data, data + size). Every read checks the bytes left first, so a
// truncated or lying file yields a data_loss Status ("truncated: <what> needs 8 bytes at offset 120, 3 remain")
// instead of a read past the end. Messages do not name the file: callers add it with with_context().
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  size_t pos() const { return pos_; }
  size_t size() const { return size_; }
  size_t remaining() const { return size_ - pos_; }
  const uint8_t* current() const { return data_ + pos_; }

  // data_loss unless `n` more bytes are available.
  Status need(size_t n, const char* what) const {
    if (n <= remaining()) return Status();
    return data_loss(std::string("truncated: ") + what + " needs " + std::to_string(n) + " bytes at offset " +
                     std::to_string(pos_) + ", but only " + std::to_string(remaining()) + " remain");
  }

  template <typename T>
  Result<T> read(const char* what) {
    static_assert(std::is_trivially_copyable_v<T>);
    KV_RETURN_IF_ERROR(need(sizeof(T), what));
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  // A view of the next `n` bytes (valid while the underlying memory is).
  Result<std::string_view> read_bytes(size_t n, const char* what) {
    KV_RETURN_IF_ERROR(need(n, what));
    std::string_view v(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return v;
  }

  Status skip(size_t n, const char* what) {
    KV_RETURN_IF_ERROR(need(n, what));
    pos_ += n;
    return Status();
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// a * b, or false when it overflows.
inline bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }

// Rounds `n` up to a multiple of `alignment` (a power of two); false when it overflows.
inline bool checked_align_up(uint64_t n, uint64_t alignment, uint64_t* out) {
  if (n > std::numeric_limits<uint64_t>::max() - (alignment - 1)) return false;
  *out = (n + alignment - 1) & ~(alignment - 1);
  return true;
}

// The element count and byte size of a tensor of `dtype` and `shape`, or a data_loss Status naming what is wrong
// (a negative dimension, an overflowing product, a Q8_0 row that is not a whole number of blocks).
struct TensorSize {
  uint64_t num_elements = 0;
  uint64_t num_bytes = 0;
};
Result<TensorSize> checked_tensor_size(DType dtype, const std::vector<int64_t>& shape);

// The alignment a pointer to `dtype` data must have for a plain load (4 for F32, 2 for the 16-bit and Q8_0 types).
size_t element_alignment(DType dtype);

// Writes a file, remembering the first failure; finish() flushes and closes and returns it. On any failure the
// partial file is removed. Writes go to "<path>.tmp" and are renamed onto `path` at the end, so a reader never
// sees a half-written file.
class FileWriter {
 public:
  explicit FileWriter(std::string path);
  ~FileWriter();
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  void write(const void* data, size_t n);
  void write_zeros(size_t n);
  template <typename T>
  void write_le(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    write(&v, sizeof(T));
  }
  uint64_t bytes_written() const { return written_; }
  Status finish();

 private:
  void fail(const std::string& what);

  std::string path_;
  std::string tmp_path_;
  std::FILE* f_ = nullptr;
  uint64_t written_ = 0;
  Status status_;
  bool finished_ = false;
};

}  // namespace kvshare::formats_internal
