#include "tokenizer/flat_index.h"

#include <algorithm>
#include <bit>
#include <functional>

namespace kvshare {
namespace {

size_t capacity_for(size_t count) { return std::bit_ceil(std::max<size_t>(16, count * 2)); }  // load <= 1/2

uint64_t mix(uint64_t key) {  // a 64-bit finalizer (multiply-xorshift), so nearby ids spread out
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdULL;
  key ^= key >> 33;
  key *= 0xc4ceb9fe1a85ec53ULL;
  key ^= key >> 33;
  return key;
}

}  // namespace

void PieceIndex::build(const std::vector<std::string>& pieces, const std::vector<bool>& include) {
  pieces_ = &pieces;
  size_t count = 0;
  for (size_t id = 0; id < pieces.size(); ++id) count += include[id] ? 1 : 0;
  slots_.assign(capacity_for(count), Slot{0, -1});
  mask_ = slots_.size() - 1;
  for (size_t id = 0; id < pieces.size(); ++id) {
    if (!include[id]) continue;
    const uint64_t h = std::hash<std::string_view>{}(pieces[id]);
    const auto tag = static_cast<uint32_t>(h >> 32);
    for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.id < 0) {
        s = {tag, static_cast<int32_t>(id)};
        break;
      }
      if (s.tag == tag && pieces[s.id] == pieces[id]) break;  // a duplicate: the lower id stays
    }
  }
}

int32_t PieceIndex::find(std::string_view text) const {
  if (slots_.empty()) return -1;
  const uint64_t h = std::hash<std::string_view>{}(text);
  const auto tag = static_cast<uint32_t>(h >> 32);
  for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
    const Slot& s = slots_[i];
    if (s.id < 0) return -1;
    if (s.tag == tag && (*pieces_)[s.id] == text) return s.id;
  }
}

void MergeIndex::reserve(size_t count) {
  if (capacity_for(count) <= slots_.size()) return;
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(capacity_for(count), Slot{});
  mask_ = slots_.size() - 1;
  for (const Slot& s : old) {
    if (s.key != kEmpty) slots_[slot_of(s.key)] = s;
  }
}

size_t MergeIndex::slot_of(uint64_t key) const {
  uint64_t i = mix(key) & mask_;
  while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
  return i;
}

void MergeIndex::insert(int32_t left, int32_t right, MergeInfo info) {
  if ((size_ + 1) * 2 > slots_.size()) reserve(size_ + 1);
  const uint64_t key = (static_cast<uint64_t>(left) << 32) | static_cast<uint32_t>(right);
  Slot& s = slots_[slot_of(key)];
  if (s.key == key) return;
  s = {key, info};
  ++size_;
}

const MergeInfo* MergeIndex::find(int32_t left, int32_t right) const {
  if (slots_.empty() || left < 0 || right < 0) return nullptr;
  const uint64_t key = (static_cast<uint64_t>(left) << 32) | static_cast<uint32_t>(right);
  const Slot& s = slots_[slot_of(key)];
  return s.key == key ? &s.info : nullptr;
}

}  // namespace kvshare
