#include "formats/tensor_store.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <vector>

namespace kvshare {
namespace {

TEST(TensorStore, AddFindNames) {
  static const float kData[6] = {1, 2, 3, 4, 5, 6};
  TensorStore store;
  EXPECT_TRUE(store.empty());
  store.add("b", TensorView{DType::kF32, {2, 3}, kData});
  store.add("a", TensorView{DType::kF32, {6}, kData});
  EXPECT_EQ(store.size(), 2u);
  EXPECT_EQ(store.names(), (std::vector<std::string>{"a", "b"}));
  ASSERT_NE(store.find("b"), nullptr);
  EXPECT_EQ(store.find("b")->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(store.find("b")->data, kData);
  EXPECT_EQ(store.find("c"), nullptr);
  EXPECT_TRUE(store.contains("a"));
}

TEST(TensorStore, AddCopyOwnsAnAlignedCopy) {
  std::vector<float> src = {1.5f, -2.f, 3.25f};
  TensorStore store;
  store.add_copy("t", TensorView{DType::kF32, {3}, src.data()});
  src.assign(3, 0.f);
  const TensorView* t = store.find("t");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % 64, 0u);
  const auto* f = static_cast<const float*>(t->data);
  EXPECT_EQ(f[0], 1.5f);
  EXPECT_EQ(f[2], 3.25f);
  store.add_copy("empty", TensorView{DType::kF16, {0, 4}, nullptr});
  EXPECT_EQ(store.find("empty")->num_bytes(), 0u);
}

TEST(TensorStore, KeepAliveAndMerge) {
  auto buffer = std::make_shared<std::vector<float>>(4, 7.f);
  std::weak_ptr<std::vector<float>> weak = buffer;
  TensorStore outer;
  {
    TensorStore a;
    a.add("x", TensorView{DType::kF32, {4}, buffer->data()});
    a.keep_alive(buffer);
    a.set_metadata("format", "pt");
    buffer.reset();
    TensorStore b;
    b.add("y", TensorView{DType::kF32, {1}, weak.lock()->data()});
    b.set_metadata("format", "other");
    b.set_metadata("extra", "1");
    a.merge(std::move(b));
    EXPECT_EQ(a.names(), (std::vector<std::string>{"x", "y"}));
    EXPECT_EQ(a.metadata().at("format"), "pt");  // the existing value wins
    EXPECT_EQ(a.metadata().at("extra"), "1");
    const TensorView* x = a.find("x");
    outer = std::move(a);
    EXPECT_EQ(outer.find("x"), x);  // moving keeps views (and pointers to them) valid
  }
  EXPECT_FALSE(weak.expired());
  EXPECT_EQ(static_cast<const float*>(outer.find("x")->data)[3], 7.f);
  outer = TensorStore();
  EXPECT_TRUE(weak.expired());
}

}  // namespace
}  // namespace kvshare
