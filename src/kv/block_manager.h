// BlockManager: the bookkeeping of the paged KV cache - which block holds which tokens, who references it,
// and which full blocks can be found again by a later request with the same prefix. It holds no tensors
// (KvStorage does); every operation is O(1) or O(block_size), independent of how many blocks are cached.
//
// A block is always in exactly one state:
//   free       - unreferenced and holding nothing findable (never used, or released while unpublished);
//   evictable  - unreferenced but published: its tokens can still be matched, until allocate() reuses it;
//   referenced - ref_count > 0 (held by running sequences or pinned prefixes; pinning is just a reference).
//
// Prefix index. A published block is identified by (parent link, its block_size tokens, salt). It is indexed
// by a 64-bit hash chained from the parent's hash, the tokens and the salt, but a hash is only a candidate:
// match_prefix confirms each hit exactly (tokens equal, salt equal, and the parent is the block it matched
// just before), so a chain is confirmed link by link and a hash collision can never return wrong KV.
//
// Generations. A parent can be evicted and its id reused while its children are still cached. A child
// therefore records its parent as (block id, generation), and a block's generation increments whenever it
// is allocated or its cache entry is dropped. A child whose parent moved on is "stale": it can never match
// again; it stays evictable and is reused in LRU order (or dropped early when a live block claims its hash).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/status.h"

namespace kvshare {

class BlockManager {
 public:
  // num_blocks blocks of block_size token slots each; both must be positive (engine configuration, validated
  // before this is built). With prefix caching off, nothing is ever published or matched: publish() returns
  // its block unchanged and match_prefix() returns nothing.
  // `hash_bits` (0..64) is for tests only: index hashes keep just their low hash_bits bits, so collisions
  // become common and the exact confirmation of every hit can be tested. The engine leaves it at 64.
  BlockManager(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching, int32_t hash_bits = 64);

  // The longest run of leading FULL blocks of `tokens` that are cached under `salt`, as block ids in order.
  // `salt` is the request's cache_salt: tenants with different salts never share a block. Each hit is
  // confirmed exactly (tokens, salt, and parent == the block matched before it, at its current generation).
  // Does not take references: acquire() the result before the next allocate(), which may evict them.
  // `max_blocks` (>= 0) caps the run: the engine must compute at least one prompt token itself, so it asks
  // for at most (len - 1) / block_size blocks.
  std::vector<int32_t> match_prefix(std::span<const int32_t> tokens, std::string_view salt,
                                    int32_t max_blocks) const;

  // Takes one reference on each block (a block may appear more than once: one reference each). Meant for
  // hits from match_prefix, for sharing a referenced block, and for pinning. Precondition: every block is
  // referenced or evictable - a free block holds nothing worth referencing, so acquiring it is an engine bug.
  // An evictable block stops being evictable.
  void acquire(std::span<const int32_t> blocks);

  // A block for new tokens, with reference count 1: a free block first (the most recently released, else the
  // lowest id never used), else the least recently used evictable block, whose cache entry is dropped (which
  // makes its cached descendants stale). nullopt when every block is referenced - the scheduler must then
  // wait or preempt; it is not an error here.
  std::optional<int32_t> allocate();

  // Drops one reference from each block, in the order given. Precondition: each has ref_count > 0 (releasing
  // an unreferenced block is an engine bug). At zero, a published block becomes evictable as the most
  // recently used (appended to the back of the LRU; the front is evicted first), an unpublished one free.
  //
  // Order: release a sequence's blocks LAST-TO-FIRST (tail block first, first block last). The tail then sits
  // nearer the LRU front than its head, so a chain is evicted from its tail inward: a cached head stays
  // useful to every request sharing that prefix, whereas a tail whose head is gone can never match again.
  void release(std::span<const int32_t> blocks);
  // Releases a sequence's block table (first block first in `chain`) in the order above: tail first.
  void release_chain(std::span<const int32_t> chain);

  // Records that `block` (referenced, now full) holds `tokens` (exactly block_size of them) following
  // `parent` (the previous block of the same sequence, or -1 for the first block) under `salt`, so that
  // others can find it. Returns:
  //   - another block's id if an identical block (same parent link, tokens, salt) is already published;
  //     `block` stays unpublished. That block is NOT referenced by this call: to switch to it, acquire() it
  //     before the next allocate(), then release() your own.
  //   - `block` otherwise, published - except that it is silently left unpublished (still a valid block for
  //     the sequence; it becomes free instead of evictable) when prefix caching is off, when `parent` is not
  //     published (its own publish was deduplicated or lost a collision: a chain is only findable through
  //     published links), or on a true hash collision with a different live block (rare at 64 bits).
  // Republishing an already published block with identical content returns `block` (idempotent).
  // Preconditions (engine bugs otherwise): `block` is referenced; tokens.size() == block_size; parent is -1
  // or a valid id other than `block`; an already published `block` is republished only with its own content.
  int32_t publish(int32_t block, int32_t parent, std::span<const int32_t> tokens, std::string_view salt);

  // Drops the cache entries of those of `blocks` that are published, so nothing matches them again (their
  // cached descendants become stale too). For blocks published for a step that then failed: their K/V were
  // never written. They stay referenced by their owner.
  void unpublish(std::span<const int32_t> blocks);

  // Drops the cache entry of every evictable block (published, unreferenced), which become free, the most
  // recently used allocated first again. Referenced blocks (running sequences, pinned prefixes) stay
  // published. Returns how many blocks were dropped. O(evictable blocks).
  int32_t drop_evictable();

  // Bytes this manager may allocate for one block beside its K/V (KvStorage's): its Block record, its token ids,
  // its free-list slot and, with prefix caching, its prefix-index entry. For small K/V rows (few layers, heads
  // or dimensions, or a block size of 1) this is more than the K/V itself, so the engine counts it in the KV
  // budget (engine/kv_budget.h). A salt longer than std::string's inline capacity (15 bytes with libstdc++)
  // costs its length again per published block; that is not counted.
  static int64_t bookkeeping_bytes_per_block(int32_t block_size, bool enable_prefix_caching);

  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  bool prefix_caching_enabled() const { return enable_prefix_caching_; }
  // Allocatable now: free + evictable.
  int32_t num_free_blocks() const {
    return static_cast<int32_t>(free_list_.size()) + num_never_used() + num_evictable_;
  }
  // Cached and unreferenced.
  int32_t num_evictable_blocks() const { return num_evictable_; }
  // Referenced.
  int32_t num_used_blocks() const { return num_blocks_ - num_free_blocks(); }
  // Precondition: 0 <= block < num_blocks.
  int32_t ref_count(int32_t block) const;
  // Precondition: 0 <= block < num_blocks.
  bool is_published(int32_t block) const;

  // Checks every invariant: ref counts >= 0; each block is exactly one of free / evictable / referenced and
  // the free list, LRU list and counters agree with that; the index maps only to published blocks under their
  // own hash and every published block is indexed; evictable blocks are exactly the published unreferenced
  // ones; the LRU is a well-formed list without duplicates. O(num_blocks): for tests and debug builds.
  // Returns an INTERNAL Status naming the first violation.
  Status check_invariants() const;

 private:
  static constexpr int32_t kNone = -1;

  // Per-block state, indexed by block id.
  struct Block {
    int32_t ref_count = 0;
    uint64_t generation = 0;  // bumped on every allocation and every dropped cache entry
    bool in_free_list = false;
    bool in_lru = false;
    int32_t lru_prev = kNone;  // intrusive LRU links, valid while in_lru
    int32_t lru_next = kNone;
    // Cache entry, valid while published (tokens live in tokens_ at block * block_size).
    bool published = false;
    uint64_t hash = 0;             // index key
    int32_t parent = kNone;        // kNone for the first block of a sequence
    uint64_t parent_generation = 0;
    std::string salt;
  };

  // The index key of a block: chained from its parent's key, the salt's hash and the tokens.
  uint64_t block_key(uint64_t parent_key, uint64_t salt_hash, std::span<const int32_t> tokens) const;
  std::span<const int32_t> stored_tokens(int32_t block) const;
  // Whether a published block's recorded parent link still holds (parent unchanged since publish).
  bool parent_link_live(const Block& b) const;
  // Whether published block `b` is exactly (parent at its current generation, tokens, salt).
  bool same_content(int32_t b, int32_t parent, std::span<const int32_t> tokens, std::string_view salt) const;
  // Removes `block`'s cache entry (index entry and stored identity) and bumps its generation; an evictable
  // block becomes free.
  void drop_cache_entry(int32_t block);
  void lru_push_back(int32_t block);
  void lru_remove(int32_t block);
  void check_id(int32_t block) const;
  // Blocks [0, blocks_.size()) have been allocated at least once; the rest are free and have no record yet.
  int32_t num_never_used() const { return num_blocks_ - static_cast<int32_t>(blocks_.size()); }
  bool ever_used(int32_t block) const { return static_cast<size_t>(block) < blocks_.size(); }

  int32_t num_blocks_;
  int32_t block_size_;
  bool enable_prefix_caching_;
  uint64_t hash_mask_;  // all ones unless a test narrowed hash_bits
  // Per-block storage grows as blocks are first allocated, within capacity reserved for num_blocks: a cache
  // of millions of small blocks starts at once and its bookkeeping becomes resident only as it is used, like
  // KvStorage's pages. (Built up front, 90 million blocks took 47 s and 8.5 GB before the first request.)
  std::vector<Block> blocks_;       // one record per block ever allocated
  std::vector<int32_t> tokens_;     // block_size per block ever allocated; a published block's tokens
  std::vector<int32_t> free_list_;  // stack of released blocks: allocate() pops from the back, then takes a new one
  int32_t lru_head_ = kNone;        // least recently used evictable block
  int32_t lru_tail_ = kNone;        // most recently used
  int32_t num_evictable_ = 0;
  std::unordered_map<uint64_t, int32_t> index_;  // chained hash -> published block
};

}  // namespace kvshare
