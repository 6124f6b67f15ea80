// A read-only memory-mapped file. Tensors used in their stored dtype point straight into it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/status.h"

namespace kvshare {

class MappedFile {
 public:
  // Maps the whole file. Only a regular file (or a link to one): anything else is refused at once, a FIFO with
  // no writer included (it is opened without blocking). not_found when it cannot be opened.
  static Result<std::shared_ptr<MappedFile>> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Asks the kernel to reclaim the whole pages inside [data, data + bytes) (MADV_PAGEOUT): for a file mapping,
// clean pages are dropped and read again from the file if touched later. Never loses data, whatever the
// memory is (anonymous pages would be swapped, or kept where there is no swap). For bytes read once, such as
// weights repacked at load, so they do not stay resident twice. Does nothing where unsupported.
void release_pages(const void* data, size_t bytes);

// The largest text file read whole (read_text_file): real tokenizer.json files are tens of MiB at most.
constexpr size_t kMaxTextFileBytes = 1024u << 20;
// Reads a whole (small) file into a string: config.json, tokenizer.json. invalid_argument for a folder or a file
// larger than kMaxTextFileBytes (naming the limit); not_found when it cannot be opened.
// (`max_bytes` lowers the limit, for tests.)
Result<std::string> read_text_file(const std::string& path, size_t max_bytes = kMaxTextFileBytes);
// A text file of a model folder (config.json, tokenizer files, chat templates, the safetensors index): as
// read_text_file, but only a regular file (or a link to one). A pipe there would block for good (a FIFO with no
// writer) and a device would stream up to the limit (/dev/zero: 1 GiB and 45 s before an error). Paths a user
// names on the command line may be pipes (`--messages <(...)`) and are read with read_text_file.
Result<std::string> read_model_text_file(const std::string& path);
// Whether anything is at `path` (following links).
bool file_exists(const std::string& path);
// Whether `path` names anything, even a link that leads nowhere or to itself: "there is no such file" is
// then the wrong error.
bool path_entry_exists(const std::string& path);

}  // namespace kvshare
