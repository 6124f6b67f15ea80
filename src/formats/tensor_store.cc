#include "formats/tensor_store.h"

#include <cstring>
#include <new>

#include "core/status.h"

namespace kvshare {

namespace {

constexpr std::align_val_t kOwnedAlignment{64};

struct AlignedDelete {
  void operator()(uint8_t* p) const { ::operator delete[](p, kOwnedAlignment); }
};

}  // namespace

const TensorView* TensorStore::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, view] : tensors_) out.push_back(name);
  return out;
}

void TensorStore::add(std::string name, TensorView view) {
  KV_CHECK(!contains(name), "TensorStore::add: duplicate tensor " + name);
  tensors_.emplace(std::move(name), std::move(view));
}

void TensorStore::add_copy(std::string name, const TensorView& view) {
  const size_t bytes = view.num_bytes();
  std::shared_ptr<uint8_t> buffer(new (kOwnedAlignment) uint8_t[bytes == 0 ? 1 : bytes], AlignedDelete());
  if (bytes != 0) std::memcpy(buffer.get(), view.data, bytes);
  TensorView copy = view;
  copy.data = buffer.get();
  keep_alive(std::move(buffer));
  add(std::move(name), std::move(copy));
}

void TensorStore::keep_alive(std::shared_ptr<const void> owner) {
  if (owner != nullptr) owners_.push_back(std::move(owner));
}

void TensorStore::merge(TensorStore&& other) {
  for (auto& [name, view] : other.tensors_) {
    KV_CHECK(!contains(name), "TensorStore::merge: tensor " + name + " is in both stores");
  }
  tensors_.merge(other.tensors_);
  for (auto& [key, value] : other.metadata_) metadata_.emplace(key, std::move(value));
  for (auto& owner : other.owners_) owners_.push_back(std::move(owner));
  other.tensors_.clear();
  other.metadata_.clear();
  other.owners_.clear();
}

}  // namespace kvshare
