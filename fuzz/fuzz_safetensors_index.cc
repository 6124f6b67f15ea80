// libFuzzer target: a sharded Hugging Face folder's model.safetensors.index.json (load_safetensors_dir). The
// input is the index; two valid shards (tensors "a" and "b" in the first, "c" in the second) sit beside it.
#include <map>

#include "formats/safetensors.h"
#include "fuzz_util.h"

namespace {

using namespace kvshare;

// Writes the two shards once per process; returns the folder.
const std::string& model_dir() {
  static const std::string dir = [] {
    const std::filesystem::path d = fuzz::scratch_dir() / "sharded";
    std::filesystem::create_directories(d);
    static const float values[6] = {1, 2, 3, 4, 5, 6};
    const std::vector<NamedTensor> first = {{"a", TensorView{DType::kF32, {2, 2}, values}},
                                            {"b", TensorView{DType::kF32, {2}, values + 4}}};
    const std::vector<NamedTensor> second = {{"c", TensorView{DType::kF32, {3}, values}}};
    if (!write_safetensors((d / "model-00001-of-00002.safetensors").string(), first, {{"format", "pt"}}).ok() ||
        !write_safetensors((d / "model-00002-of-00002.safetensors").string(), second).ok())
      fuzz::fail("cannot write the shards");
    return d.string();
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = model_dir();
  const std::string index = dir + "/model.safetensors.index.json";
  std::ofstream(index, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), size);
  auto store = load_safetensors_dir(dir);
  if (!store.ok()) {
    fuzz::check_error(store.status(), "load_safetensors_dir");
    return 0;
  }
  // The shards hold 40 bytes of tensors in all.
  fuzz::check_store(*store, 1024);
  for (const auto& [name, view] : store->tensors())
    fuzz::check(name == "a" || name == "b" || name == "c" || store->metadata().count(name) != 0,
                "a tensor no shard holds: " + name);
  return 0;
}
