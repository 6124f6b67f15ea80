// SplitMix64 (Steele, Lea and Flood, 2014): the project's one seed mixer and small generator. make-model draws
// its weights from it, the sampler seeds its xoshiro256** state with it, and the engine derives each request's
// seed with it. Its outputs are part of what the tests pin (generated models, seeded sampling), so it never
// changes.
#pragma once

#include <cstdint>

namespace kvshare {

inline constexpr uint64_t kSplitMixGamma = 0x9e3779b97f4a7c15ull;

// The finalizer: a bijective avalanche of z.
inline constexpr uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

class SplitMix64 {
 public:
  explicit constexpr SplitMix64(uint64_t state) : state_(state) {}
  // The n-th call returns splitmix64_mix(state + n · gamma), n = 1, 2, ...
  constexpr uint64_t next() {
    state_ += kSplitMixGamma;
    return splitmix64_mix(state_);
  }

 private:
  uint64_t state_;
};

}  // namespace kvshare
