#include "test_util.h"

#include <cstdlib>
#include <filesystem>

#include "core/mapped_file.h"

namespace kvshare::testing {

std::string shared_dir() {
  const char* env = std::getenv("KVSHARE_SHARED_DIR");
  std::string dir = env != nullptr ? env : "";
  if (dir.empty() || !file_exists(dir)) return "";
  return std::filesystem::canonical(dir).string();
}

std::string source_dir() {
  const char* env = std::getenv("KVSHARE_SOURCE_DIR");
  return env != nullptr ? env : ".";
}

std::string temp_dir(const std::string& name) {
  const char* bin = std::getenv("KVSHARE_BINARY_DIR");
  std::filesystem::path p = std::filesystem::path(bin != nullptr ? bin : "/tmp") / "test_tmp" / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

}  // namespace kvshare::testing
