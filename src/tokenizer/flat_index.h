// Internal: open-addressing hash tables for the two lookups BPE makes constantly (a piece's text -> its id,
// a pair of ids -> their merge). Flat arrays of small slots take fewer cache misses than node-based maps,
// which matters when loading 280k merges and in the merge loop.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvshare {

// Maps the text of selected pieces to their ids. The texts are not copied: they are read from the
// vocabulary given to build(), which must outlive the index and not change.
class PieceIndex {
 public:
  // Indexes pieces[id] for every id with include[id]; on duplicate texts the lowest id wins.
  void build(const std::vector<std::string>& pieces, const std::vector<bool>& include);
  // The id of `text`, or -1.
  int32_t find(std::string_view text) const;

 private:
  struct Slot {
    uint32_t tag;  // the hash's high bits, to skip most string compares
    int32_t id;    // -1: empty
  };
  std::vector<Slot> slots_;
  uint64_t mask_ = 0;
  const std::vector<std::string>* pieces_ = nullptr;
};

struct MergeInfo {
  int32_t rank;
  int32_t merged_id;
};

// Maps a pair of token ids (left, right), both non-negative, to their merge.
class MergeIndex {
 public:
  void reserve(size_t count);
  // Keeps the first merge given for a pair.
  void insert(int32_t left, int32_t right, MergeInfo info);
  // nullptr when the pair does not merge.
  const MergeInfo* find(int32_t left, int32_t right) const;
  size_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  struct Slot {
    uint64_t key = kEmpty;
    MergeInfo info{};
  };
  size_t slot_of(uint64_t key) const;
  std::vector<Slot> slots_;
  uint64_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace kvshare
