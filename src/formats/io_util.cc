#include "formats/io_util.h"

#include <cerrno>
#include <cstdio>

#include "core/tensor.h"

namespace kvshare::formats_internal {

Result<TensorSize> checked_tensor_size(DType dtype, const std::vector<int64_t>& shape) {
  TensorSize size;
  size.num_elements = 1;
  for (int64_t d : shape) {
    if (d < 0) return data_loss("shape " + shape_to_string(shape) + " has a negative dimension");
    if (!checked_mul(size.num_elements, static_cast<uint64_t>(d), &size.num_elements) ||
        size.num_elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return data_loss("shape " + shape_to_string(shape) + " has more elements than fit in 64 bits");
    }
  }
  if (dtype == DType::kQ8_0) {
    const int64_t row = shape.empty() ? 1 : shape.back();
    if (row % kQ8_0BlockSize != 0) {
      return data_loss("Q8_0 tensor of shape " + shape_to_string(shape) + ": the innermost dimension " +
                       std::to_string(row) + " is not a multiple of the block size " + std::to_string(kQ8_0BlockSize));
    }
    size.num_bytes = size.num_elements / kQ8_0BlockSize * kQ8_0BlockBytes;  // cannot overflow: 34/32 < 2
    return size;
  }
  const uint64_t element_bytes = dtype == DType::kF32 ? 4 : 2;
  if (!checked_mul(size.num_elements, element_bytes, &size.num_bytes)) {
    return data_loss("shape " + shape_to_string(shape) + " has more bytes than fit in 64 bits");
  }
  return size;
}

size_t element_alignment(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kF16:
    case DType::kBF16:
    case DType::kQ8_0: return 2;
  }
  return 1;
}

FileWriter::FileWriter(std::string path) : path_(std::move(path)), tmp_path_(path_ + ".tmp") {
  f_ = std::fopen(tmp_path_.c_str(), "wb");
  if (f_ == nullptr) {
    const int err = errno;
    const std::string msg = "cannot create " + tmp_path_ + ": " + std::strerror(err);
    status_ = err == ENOENT ? not_found(msg) : internal_error(msg);
  }
}

FileWriter::~FileWriter() {
  if (!finished_) {
    if (f_ != nullptr) std::fclose(f_);
    std::remove(tmp_path_.c_str());
  }
}

void FileWriter::fail(const std::string& what) {
  if (!status_.ok()) return;
  const int err = errno;
  const std::string msg = what + " " + tmp_path_ + ": " + std::strerror(err);
  status_ = err == ENOSPC ? resource_exhausted(msg) : internal_error(msg);
}

void FileWriter::write(const void* data, size_t n) {
  if (!status_.ok() || n == 0) return;
  if (std::fwrite(data, 1, n, f_) != n) {
    fail("cannot write");
    return;
  }
  written_ += n;
}

void FileWriter::write_zeros(size_t n) {
  static const uint8_t kZeros[256] = {};
  while (n > 0) {
    const size_t chunk = n < sizeof(kZeros) ? n : sizeof(kZeros);
    write(kZeros, chunk);
    n -= chunk;
  }
}

Status FileWriter::finish() {
  if (finished_) return status_;
  if (status_.ok() && std::fflush(f_) != 0) fail("cannot write");
  if (f_ != nullptr && std::fclose(f_) != 0) fail("cannot close");
  f_ = nullptr;
  if (status_.ok() && std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    status_ = internal_error("cannot rename " + tmp_path_ + " to " + path_ + ": " + std::strerror(err));
  }
  if (!status_.ok()) std::remove(tmp_path_.c_str());
  finished_ = true;
  return status_;
}

}  // namespace kvshare::formats_internal
