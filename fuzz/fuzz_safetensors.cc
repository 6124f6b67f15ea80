// libFuzzer target: one safetensors file (load_safetensors). A load either fails with a Status that says what
// is wrong, or gives a store whose every tensor is consistent and readable (fuzz_util.h).
#include "formats/safetensors.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvshare;
  const std::string path = fuzz::write_scratch("model.safetensors", {reinterpret_cast<const char*>(data), size});
  auto store = load_safetensors(path);
  if (!store.ok()) {
    fuzz::check_error(store.status(), "load_safetensors");
    return 0;
  }
  fuzz::check_store(*store, size);
  return 0;
}
