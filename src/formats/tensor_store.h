// TensorStore: named tensors read from files, and whatever keeps their bytes alive.
//
// The views a loader adds point into memory-mapped files (zero-copy); the store holds the mappings through
// keep_alive(), so a TensorView found here stays valid for as long as the store (or a store it was merged
// into) lives. Moving a store keeps every view valid; copying shares the owners.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace kvshare {

// A tensor and its name, for the writers.
struct NamedTensor {
  std::string name;
  TensorView view;
};

class TensorStore {
 public:
  // The tensor called `name`, or nullptr. The pointer stays valid until the store is destroyed.
  const TensorView* find(const std::string& name) const;
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  // Every tensor name, sorted.
  std::vector<std::string> names() const;
  size_t size() const { return tensors_.size(); }
  bool empty() const { return tensors_.empty(); }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }

  // Adds a tensor. Preconditions: no tensor called `name` is present, and `view.data` (num_bytes() bytes)
  // outlives the store or is owned by something passed to keep_alive().
  void add(std::string name, TensorView view);
  // Adds a tensor whose num_bytes() bytes are copied from `view.data` into a 64-byte-aligned buffer the store
  // owns. Precondition: no tensor called `name` is present.
  void add_copy(std::string name, const TensorView& view);
  // Keeps `owner` (a mapped file, a buffer) alive as long as the store.
  void keep_alive(std::shared_ptr<const void> owner);

  // Free-form string metadata that came with the tensors (a safetensors header's "__metadata__").
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  void set_metadata(std::string key, std::string value) { metadata_[std::move(key)] = std::move(value); }

  // Moves every tensor and owner of `other` into this store; metadata keys already here keep their value.
  // Precondition: no tensor name is in both stores (check with contains() first; loaders do).
  void merge(TensorStore&& other);

 private:
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
  std::vector<std::shared_ptr<const void>> owners_;
};

}  // namespace kvshare
