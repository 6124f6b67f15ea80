// What the server's unit tests share: an engine over ../shared's tiny model.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "kvshare/engine.h"
#include "test_util.h"

namespace kvshare::server::testing {

constexpr const char* kTinyModel = "models/tinystories-656k";  // under ../shared (KV_REQUIRE_SHARED(kTinyModel))

// An engine over kTinyModel with an 8 MiB KV cache; null (and a test failure) when it cannot be created.
inline std::unique_ptr<Engine> make_tiny_engine() {
  EngineConfig c;
  c.model_path = kvshare::testing::shared_dir() + "/" + kTinyModel;
  c.kv_cache_bytes = 8 << 20;
  auto e = Engine::create(c);
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return e.ok() ? std::move(e).value() : nullptr;
}

}  // namespace kvshare::server::testing
