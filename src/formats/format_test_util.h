// Test-only helpers for the formats tests: building files byte by byte, and checking that a view is zero-copy.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace kvshare::testing {

// Little-endian bytes, appended piece by piece.
class Bytes {
 public:
  Bytes& u8(uint8_t v) { return raw(&v, 1); }
  Bytes& u32(uint32_t v) { return raw(&v, 4); }
  Bytes& u64(uint64_t v) { return raw(&v, 8); }
  Bytes& f32(float v) { return raw(&v, 4); }
  Bytes& str(const std::string& s) { return raw(s.data(), s.size()); }
  // A GGUF string: u64 length then the bytes.
  Bytes& gstr(const std::string& s) { return u64(s.size()).str(s); }
  Bytes& zeros(size_t n) { return str(std::string(n, '\0')); }
  Bytes& pad_to(size_t alignment) { return zeros((alignment - data_.size() % alignment) % alignment); }
  Bytes& raw(const void* p, size_t n) {
    data_.append(static_cast<const char*>(p), n);
    return *this;
  }
  const std::string& data() const { return data_; }
  size_t size() const { return data_.size(); }

 private:
  std::string data_;
};

// Replaces the file (unlinking first: truncating an existing file in place makes ext4 flush it on close, which
// would make the many-small-files tests slow).
inline void write_file(const std::string& path, const std::string& bytes) {
  std::filesystem::remove(path);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// True when `p` lies inside a memory mapping of the file at `path` (per /proc/self/maps): the view is zero-copy.
inline bool points_into_mapping_of(const void* p, const std::string& path) {
  const std::string want = std::filesystem::canonical(path).string();
  const auto addr = reinterpret_cast<uintptr_t>(p);
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    std::istringstream ls(line);
    std::string range, perms, offset, dev, inode, file;
    ls >> range >> perms >> offset >> dev >> inode;
    std::getline(ls >> std::ws, file);
    const size_t dash = range.find('-');
    const uintptr_t begin = std::stoull(range.substr(0, dash), nullptr, 16);
    const uintptr_t end = std::stoull(range.substr(dash + 1), nullptr, 16);
    if (addr >= begin && addr < end) return file == want;
  }
  return false;
}

}  // namespace kvshare::testing
