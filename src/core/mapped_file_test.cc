#include "core/mapped_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "test_util.h"

namespace kvshare {
namespace {

// A FIFO with no writer once blocked MappedFile::open for good (open() came before the regular-file check), so a
// model.safetensors, a shard or a .gguf made with mkfifo hung the load.
TEST(MappedFile, AFifoIsRefusedWithoutBlocking) {
  const std::string fifo = testing::temp_dir("mapped_file_fifo") + "/model.gguf";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const Status st = testing::status_without_blocking_on_fifo(fifo, [&] { return MappedFile::open(fifo).status(); });
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  EXPECT_NE(st.message().find(fifo + " is not a regular file (a pipe, a socket or a device)"), std::string::npos)
      << st.to_string();
}

TEST(MappedFile, MapsRegularFilesAndLinksToThemOnly) {
  const std::string dir = testing::temp_dir("mapped_file_kinds");
  std::ofstream(dir + "/w.bin", std::ios::binary) << "abc";
  std::filesystem::create_symlink(dir + "/w.bin", dir + "/link.bin");
  Result<std::shared_ptr<MappedFile>> file = MappedFile::open(dir + "/link.bin");
  ASSERT_TRUE(file.ok()) << file.status().to_string();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*file)->data()), (*file)->size()), "abc");

  const Status folder = MappedFile::open(dir).status();
  EXPECT_NE(folder.message().find(dir + " is not a regular file (a folder)"), std::string::npos) << folder.to_string();
  const Status device = MappedFile::open("/dev/zero").status();
  EXPECT_NE(device.message().find("/dev/zero is not a regular file"), std::string::npos) << device.to_string();
  EXPECT_EQ(MappedFile::open(dir + "/absent.bin").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvshare
