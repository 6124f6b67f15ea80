#include "kv/block_manager.h"

#include <algorithm>
#include <utility>

#include "core/hash.h"

namespace kvshare {
namespace {

// Hashing for the prefix index. It need not be cryptographic: every hit is confirmed exactly, so the hash
// only has to spread blocks well. Tokens are absorbed two per 64-bit word with a multiply-rotate step and
// the result goes through a final xor-shift/multiply avalanche.
constexpr uint64_t kRootHash = 0x6b76736861726531ULL;  // "kvshare1": the "parent hash" of a first block
constexpr uint64_t kMulA = 0x9e3779b97f4a7c15ULL;      // 2^64 / golden ratio, odd
constexpr uint64_t kMulB = 0x8cb92ba72f3d8dd7ULL;      // an arbitrary odd constant with mixed bits

inline uint64_t rotate_left(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

inline uint64_t absorb(uint64_t h, uint64_t word) {
  h ^= word * kMulA;
  return rotate_left(h, 29) * kMulB;
}

inline uint64_t avalanche(uint64_t h) {
  h ^= h >> 32;
  h *= kMulA;
  h ^= h >> 29;
  h *= kMulB;
  h ^= h >> 32;
  return h;
}

// FNV-1a over the salt's bytes (core/hash.h), then mixed with its length and avalanched.
uint64_t hash_salt(std::string_view salt) { return avalanche(absorb(fnv1a64(salt), salt.size())); }

// The index key of a block: chained from its parent's key, so equal keys imply (barring collisions) equal
// whole prefixes, not just equal blocks.
uint64_t hash_block(uint64_t parent_hash, uint64_t salt_hash, std::span<const int32_t> tokens) {
  uint64_t h = absorb(parent_hash, salt_hash);
  size_t i = 0;
  for (; i + 1 < tokens.size(); i += 2) {
    const uint64_t word = static_cast<uint64_t>(static_cast<uint32_t>(tokens[i])) |
                          (static_cast<uint64_t>(static_cast<uint32_t>(tokens[i + 1])) << 32);
    h = absorb(h, word);
  }
  if (i < tokens.size()) h = absorb(h, static_cast<uint32_t>(tokens[i]) | (uint64_t{1} << 63));
  return avalanche(absorb(h, tokens.size()));
}

}  // namespace

BlockManager::BlockManager(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching, int32_t hash_bits)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      enable_prefix_caching_(enable_prefix_caching),
      hash_mask_(hash_bits >= 64 ? ~uint64_t{0} : (uint64_t{1} << std::max(hash_bits, 0)) - 1) {
  KV_CHECK(num_blocks > 0 && block_size > 0,
           "block manager: num_blocks " + std::to_string(num_blocks) + ", block_size " + std::to_string(block_size));
  KV_CHECK(hash_bits >= 0 && hash_bits <= 64, "block manager: hash_bits " + std::to_string(hash_bits));
  // Reserved, not built: untouched capacity is address space only. Never reallocated, so references into
  // blocks_ stay valid while it grows.
  blocks_.reserve(static_cast<size_t>(num_blocks));
  tokens_.reserve(static_cast<size_t>(num_blocks) * static_cast<size_t>(block_size));
  free_list_.reserve(static_cast<size_t>(num_blocks));
}

int64_t BlockManager::bookkeeping_bytes_per_block(int32_t block_size, bool enable_prefix_caching) {
  int64_t bytes = sizeof(Block) + int64_t{block_size} * sizeof(int32_t) + sizeof(int32_t);  // record, tokens, free list
  if (enable_prefix_caching) {
    // An index_ entry: a node (next pointer, key, value) from malloc, which adds an 8-byte header and rounds
    // to 16 bytes (glibc), and up to two bucket pointers (the table doubles when it fills).
    const int64_t node = sizeof(void*) + sizeof(std::pair<const uint64_t, int32_t>);
    bytes += (node + 8 + 15) / 16 * 16 + 2 * sizeof(void*);
  }
  return bytes;
}

void BlockManager::check_id(int32_t block) const {
  KV_CHECK(block >= 0 && block < num_blocks_,
           "block id " + std::to_string(block) + " out of range [0, " + std::to_string(num_blocks_) + ")");
}

int32_t BlockManager::ref_count(int32_t block) const {
  check_id(block);
  return ever_used(block) ? blocks_[block].ref_count : 0;
}

bool BlockManager::is_published(int32_t block) const {
  check_id(block);
  return ever_used(block) && blocks_[block].published;
}

uint64_t BlockManager::block_key(uint64_t parent_key, uint64_t salt_hash, std::span<const int32_t> tokens) const {
  return hash_block(parent_key, salt_hash, tokens) & hash_mask_;
}

std::span<const int32_t> BlockManager::stored_tokens(int32_t block) const {
  return std::span<const int32_t>(tokens_).subspan(static_cast<size_t>(block) * block_size_, block_size_);
}

bool BlockManager::parent_link_live(const Block& b) const {
  if (b.parent == kNone) return true;
  const Block& p = blocks_[b.parent];
  return p.published && p.generation == b.parent_generation;
}

bool BlockManager::same_content(int32_t b, int32_t parent, std::span<const int32_t> tokens,
                                std::string_view salt) const {
  const Block& blk = blocks_[b];
  if (!blk.published || blk.parent != parent) return false;
  if (parent != kNone && blk.parent_generation != blocks_[parent].generation) return false;
  if (blk.salt != salt) return false;
  const auto stored = stored_tokens(b);
  return std::equal(stored.begin(), stored.end(), tokens.begin(), tokens.end());
}

std::vector<int32_t> BlockManager::match_prefix(std::span<const int32_t> tokens, std::string_view salt,
                                                int32_t max_blocks) const {
  KV_CHECK(max_blocks >= 0, "match_prefix: max_blocks " + std::to_string(max_blocks));
  std::vector<int32_t> hits;
  if (!enable_prefix_caching_ || index_.empty()) return hits;
  const size_t n = std::min(tokens.size() / static_cast<size_t>(block_size_), static_cast<size_t>(max_blocks));
  const uint64_t salt_hash = hash_salt(salt);
  uint64_t hash = kRootHash;
  int32_t prev = kNone;
  for (size_t i = 0; i < n; ++i) {
    const auto chunk = tokens.subspan(i * block_size_, block_size_);
    hash = block_key(hash, salt_hash, chunk);
    const auto it = index_.find(hash);
    if (it == index_.end()) break;
    // The hash only nominates a candidate; confirm parent link, salt and tokens exactly.
    if (!same_content(it->second, prev, chunk, salt)) break;
    hits.push_back(it->second);
    prev = it->second;
  }
  return hits;
}

void BlockManager::acquire(std::span<const int32_t> blocks) {
  for (const int32_t b : blocks) {
    check_id(b);
    KV_CHECK(ever_used(b) && (blocks_[b].ref_count > 0 || blocks_[b].in_lru),
             "acquire: block " + std::to_string(b) + " is free (holds nothing to share)");
    Block& blk = blocks_[b];
    if (blk.ref_count == 0) {
      lru_remove(b);
      --num_evictable_;
    }
    ++blk.ref_count;
  }
}

std::optional<int32_t> BlockManager::allocate() {
  // Released blocks first (their pages are resident already), then one never used (lowest id first), then
  // the least recently used evictable one.
  if (free_list_.empty() && num_never_used() == 0) {
    if (lru_head_ == kNone) return std::nullopt;  // every block is referenced
    drop_cache_entry(lru_head_);                  // moves the LRU victim onto the free list
  }
  int32_t b;
  if (!free_list_.empty()) {
    b = free_list_.back();
    free_list_.pop_back();
  } else {
    b = static_cast<int32_t>(blocks_.size());
    blocks_.emplace_back();
    tokens_.resize(tokens_.size() + static_cast<size_t>(block_size_));
  }
  Block& blk = blocks_[b];
  blk.in_free_list = false;
  ++blk.generation;
  blk.ref_count = 1;
  return b;
}

void BlockManager::release_chain(std::span<const int32_t> chain) {
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) release(std::span<const int32_t>(&*it, 1));
}

void BlockManager::release(std::span<const int32_t> blocks) {
  for (const int32_t b : blocks) {
    check_id(b);
    KV_CHECK(ever_used(b) && blocks_[b].ref_count > 0, "release: block " + std::to_string(b) + " is not referenced");
    Block& blk = blocks_[b];
    if (--blk.ref_count > 0) continue;
    if (blk.published) {
      lru_push_back(b);
      ++num_evictable_;
    } else {
      free_list_.push_back(b);
      blk.in_free_list = true;
    }
  }
}

int32_t BlockManager::publish(int32_t block, int32_t parent, std::span<const int32_t> tokens,
                              std::string_view salt) {
  check_id(block);
  KV_CHECK(ever_used(block) && blocks_[block].ref_count > 0,
           "publish: block " + std::to_string(block) + " is not referenced");
  KV_CHECK(tokens.size() == static_cast<size_t>(block_size_),
           "publish: " + std::to_string(tokens.size()) + " tokens for a block of " + std::to_string(block_size_));
  KV_CHECK(parent == kNone || (parent >= 0 && parent < num_blocks_ && parent != block),
           "publish: parent " + std::to_string(parent) + " of block " + std::to_string(block));
  if (!enable_prefix_caching_) return block;
  if (blocks_[block].published) {
    KV_CHECK(same_content(block, parent, tokens, salt),
             "publish: block " + std::to_string(block) + " is already published with other content");
    return block;
  }
  if (parent != kNone && !is_published(parent)) return block;  // unreachable through the index anyway

  const uint64_t parent_hash = parent == kNone ? kRootHash : blocks_[parent].hash;
  const uint64_t hash = block_key(parent_hash, hash_salt(salt), tokens);
  if (const auto it = index_.find(hash); it != index_.end()) {
    const int32_t existing = it->second;
    if (same_content(existing, parent, tokens, salt)) return existing;
    // Same key, different identity. A stale entry (its parent evicted since) can never match again: it
    // yields the slot. A live one is a true 64-bit collision: keep it and leave `block` unpublished.
    if (parent_link_live(blocks_[existing])) return block;
    drop_cache_entry(existing);
  }

  Block& blk = blocks_[block];
  blk.published = true;
  blk.hash = hash;
  blk.parent = parent;
  blk.parent_generation = parent == kNone ? 0 : blocks_[parent].generation;
  blk.salt.assign(salt);
  std::copy(tokens.begin(), tokens.end(), tokens_.begin() + static_cast<ptrdiff_t>(block) * block_size_);
  index_.emplace(hash, block);
  return block;
}

void BlockManager::unpublish(std::span<const int32_t> blocks) {
  for (int32_t b : blocks) {
    if (is_published(b)) drop_cache_entry(b);
  }
}

void BlockManager::drop_cache_entry(int32_t block) {
  Block& blk = blocks_[block];
  index_.erase(blk.hash);
  blk.published = false;
  blk.hash = 0;
  blk.parent = kNone;
  blk.parent_generation = 0;
  blk.salt.clear();
  ++blk.generation;  // children recorded the old generation: they are stale from now on
  if (blk.in_lru) {
    lru_remove(block);
    --num_evictable_;
    free_list_.push_back(block);
    blk.in_free_list = true;
  }
}

int32_t BlockManager::drop_evictable() {
  int32_t dropped = 0;
  for (; lru_head_ != kNone; ++dropped) drop_cache_entry(lru_head_);  // least recent first: popped last
  return dropped;
}

void BlockManager::lru_push_back(int32_t block) {
  Block& blk = blocks_[block];
  blk.in_lru = true;
  blk.lru_prev = lru_tail_;
  blk.lru_next = kNone;
  if (lru_tail_ == kNone) {
    lru_head_ = block;
  } else {
    blocks_[lru_tail_].lru_next = block;
  }
  lru_tail_ = block;
}

void BlockManager::lru_remove(int32_t block) {
  Block& blk = blocks_[block];
  if (blk.lru_prev == kNone) {
    lru_head_ = blk.lru_next;
  } else {
    blocks_[blk.lru_prev].lru_next = blk.lru_next;
  }
  if (blk.lru_next == kNone) {
    lru_tail_ = blk.lru_prev;
  } else {
    blocks_[blk.lru_next].lru_prev = blk.lru_prev;
  }
  blk.in_lru = false;
  blk.lru_prev = kNone;
  blk.lru_next = kNone;
}

Status BlockManager::check_invariants() const {
  auto fail = [](const std::string& what) { return internal_error("block manager invariant violated: " + what); };
  auto name = [](int32_t b) { return "block " + std::to_string(b); };
  const size_t n = blocks_.size();  // blocks ever used; the others are free without a record
  if (n > static_cast<size_t>(num_blocks_) || tokens_.size() != n * static_cast<size_t>(block_size_))
    return fail("per-block storage has the wrong size");

  std::vector<char> on_free_list(n, 0);
  for (const int32_t b : free_list_) {
    if (b < 0 || !ever_used(b)) return fail("free list holds never-used or out-of-range id " + std::to_string(b));
    if (on_free_list[b]) return fail(name(b) + " is on the free list twice");
    on_free_list[b] = 1;
  }

  std::vector<char> on_lru(n, 0);
  int32_t lru_length = 0;
  int32_t prev = kNone;
  for (int32_t b = lru_head_; b != kNone; b = blocks_[b].lru_next) {
    if (b < 0 || !ever_used(b)) return fail("LRU holds never-used or out-of-range id " + std::to_string(b));
    if (on_lru[b]) return fail(name(b) + " is in the LRU twice");
    on_lru[b] = 1;
    if (blocks_[b].lru_prev != prev) return fail(name(b) + " has a wrong LRU back link");
    ++lru_length;
    prev = b;
  }
  if (prev != lru_tail_) return fail("the LRU tail is not the last block reached from its head");
  if (lru_length != num_evictable_)
    return fail("LRU holds " + std::to_string(lru_length) + " blocks but the evictable count is " +
                std::to_string(num_evictable_));

  size_t num_published = 0;
  for (int32_t b = 0; ever_used(b); ++b) {
    const Block& blk = blocks_[b];
    if (blk.ref_count < 0) return fail(name(b) + " has ref count " + std::to_string(blk.ref_count));
    const int states = int{blk.in_free_list} + int{blk.in_lru} + int{blk.ref_count > 0};
    if (states != 1) return fail(name(b) + " is in " + std::to_string(states) + " of free/evictable/referenced");
    if (blk.in_free_list != static_cast<bool>(on_free_list[b]))
      return fail(name(b) + ": free flag disagrees with the free list");
    if (blk.in_lru != static_cast<bool>(on_lru[b])) return fail(name(b) + ": LRU flag disagrees with the LRU");
    if (blk.in_lru != (blk.published && blk.ref_count == 0))
      return fail(name(b) + (blk.in_lru ? " is evictable but not a published unreferenced block"
                                        : " is published and unreferenced but not evictable"));
    if (!blk.published) continue;
    ++num_published;
    if (!enable_prefix_caching_) return fail(name(b) + " is published with prefix caching off");
    if (blk.parent != kNone && (blk.parent < 0 || !ever_used(blk.parent) || blk.parent == b))
      return fail(name(b) + " has invalid parent " + std::to_string(blk.parent));
    const auto it = index_.find(blk.hash);
    if (it == index_.end() || it->second != b) return fail(name(b) + " is published but not indexed");
  }
  for (const auto& [hash, b] : index_) {
    if (b < 0 || !ever_used(b)) return fail("index maps to never-used or out-of-range id " + std::to_string(b));
    if (!blocks_[b].published) return fail("index maps to unpublished " + name(b));
    if (blocks_[b].hash != hash) return fail("index maps a foreign hash to " + name(b));
  }
  if (index_.size() != num_published)
    return fail("index has " + std::to_string(index_.size()) + " entries for " + std::to_string(num_published) +
                " published blocks");
  return Status::ok_status();
}

}  // namespace kvshare
