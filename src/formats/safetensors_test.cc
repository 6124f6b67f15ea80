#include "formats/safetensors.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>

#include "core/mapped_file.h"
#include "formats/format_test_util.h"
#include "test_util.h"

namespace kvshare {
namespace {

using testing::Bytes;
using testing::points_into_mapping_of;
using testing::read_file;
using testing::write_file;

std::vector<float> iota_f32(size_t n, float start) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + static_cast<float>(i);
  return v;
}

std::vector<uint16_t> to_16(DType dtype, const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  from_f32(dtype, v.data(), out.data(), v.size());
  return out;
}

bool same_bytes(const TensorView& a, const void* b) { return std::memcmp(a.data, b, a.num_bytes()) == 0; }

// A safetensors file with a hand-written header (padded or not) followed by `data`.
std::string make_file(const std::string& header, const std::string& data, bool pad = true) {
  std::string h = header;
  if (pad) {
    while ((8 + h.size()) % 8 != 0) h += ' ';
  }
  return Bytes().u64(h.size()).str(h).str(data).data();
}

// Writes `bytes` as a file, loads it, and expects failure with `code` and a message naming the file and `words`.
void expect_load_error(const std::string& name, const std::string& bytes, StatusCode code, const std::string& words) {
  const std::string path = testing::temp_dir("safetensors_bad") + "/" + name + ".safetensors";
  write_file(path, bytes);
  Result<TensorStore> r = load_safetensors(path);
  ASSERT_FALSE(r.ok()) << name << " loaded";
  EXPECT_EQ(r.status().code(), code) << name << ": " << r.status().to_string();
  EXPECT_NE(r.status().message().find(path), std::string::npos) << name << ": " << r.status().to_string();
  EXPECT_NE(r.status().message().find(words), std::string::npos) << name << ": " << r.status().to_string();
}

TEST(Safetensors, RoundTripIsZeroCopyAndAligned) {
  const std::string dir = testing::temp_dir("safetensors_round_trip");
  const std::string path = dir + "/model.safetensors";
  const std::vector<float> a = iota_f32(6, 1.f);
  const std::vector<uint16_t> b = to_16(DType::kF16, iota_f32(5, -2.f));  // odd sizes test the ordering
  const std::vector<uint16_t> c = to_16(DType::kBF16, iota_f32(3, 0.5f));
  const std::vector<float> scalar = {42.f};
  const std::vector<NamedTensor> tensors = {
      {"b.f16", TensorView{DType::kF16, {5}, b.data()}},
      {"a.f32", TensorView{DType::kF32, {2, 3}, a.data()}},
      {"c.bf16", TensorView{DType::kBF16, {3, 1}, c.data()}},
      {"scalar", TensorView{DType::kF32, {}, scalar.data()}},
      {"empty", TensorView{DType::kF32, {0, 4}, nullptr}},
      {"z.f32", TensorView{DType::kF32, {1, 6}, a.data()}},
  };
  ASSERT_TRUE(write_safetensors(path, tensors, {{"format", "pt"}, {"note", "hi"}}).ok());

  const std::string bytes = read_file(path);
  uint64_t header_len;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ((8 + header_len) % 8, 0u);

  Result<TensorStore> r = load_safetensors(path);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const TensorStore& store = *r;
  EXPECT_EQ(store.names(), (std::vector<std::string>{"a.f32", "b.f16", "c.bf16", "empty", "scalar", "z.f32"}));
  EXPECT_EQ(store.metadata().at("format"), "pt");
  EXPECT_EQ(store.metadata().at("note"), "hi");
  for (const NamedTensor& t : tensors) {
    const TensorView* v = store.find(t.name);
    ASSERT_NE(v, nullptr) << t.name;
    EXPECT_EQ(v->dtype, t.view.dtype) << t.name;
    EXPECT_EQ(v->shape, t.view.shape) << t.name;
    if (v->num_bytes() == 0) continue;
    EXPECT_TRUE(same_bytes(*v, t.view.data)) << t.name;
    EXPECT_TRUE(points_into_mapping_of(v->data, path)) << t.name << " was copied";
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v->data) % (v->dtype == DType::kF32 ? 4 : 2), 0u) << t.name;
  }
}

TEST(Safetensors, WriterRejectsBadInput) {
  const std::string path = testing::temp_dir("safetensors_writer") + "/x.safetensors";
  const float f[64] = {};
  Status s = write_safetensors(path, {{"q", TensorView{DType::kQ8_0, {32}, f}}});
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented) << s.to_string();
  s = write_safetensors(path, {{"a", TensorView{DType::kF32, {1}, f}}, {"a", TensorView{DType::kF32, {1}, f}}});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  s = write_safetensors(path, {{"__metadata__", TensorView{DType::kF32, {1}, f}}});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  s = write_safetensors(path, {{"neg", TensorView{DType::kF32, {-1}, f}}});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  s = write_safetensors(testing::temp_dir("safetensors_writer") + "/no/such/dir/x.safetensors",
                        {{"a", TensorView{DType::kF32, {1}, f}}});
  EXPECT_FALSE(s.ok());
  EXPECT_FALSE(file_exists(path));
}

TEST(Safetensors, TiedAliasFromMetadata) {
  const std::string path = testing::temp_dir("safetensors_alias") + "/model.safetensors";
  const std::vector<float> w = iota_f32(8, 0.f);
  ASSERT_TRUE(write_safetensors(path, {{"lm_head.weight", TensorView{DType::kF32, {2, 4}, w.data()}}},
                                {{"format", "pt"}, {"model.embed_tokens.weight", "lm_head.weight"}})
                  .ok());
  Result<TensorStore> r = load_safetensors(path);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_NE(r->find("model.embed_tokens.weight"), nullptr);
  EXPECT_EQ(r->find("model.embed_tokens.weight")->data, r->find("lm_head.weight")->data);
  EXPECT_EQ(r->find("format"), nullptr);  // "pt" names no tensor
}

TEST(Safetensors, UnpaddedHeaderGivesAlignedCopies) {
  // A 1-byte-misaligned F32 tensor: the loader must hand out an aligned copy with the same values.
  const std::string header = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string h = header;
  while ((8 + h.size()) % 4 != 1) h += ' ';
  float vals[2] = {1.25f, -3.5f};
  const std::string bytes = make_file(h, std::string(reinterpret_cast<const char*>(vals), 8), /*pad=*/false);
  const std::string path = testing::temp_dir("safetensors_unaligned") + "/m.safetensors";
  write_file(path, bytes);
  Result<TensorStore> r = load_safetensors(path);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const TensorView* t = r->find("t");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % 4, 0u);
  EXPECT_EQ(static_cast<const float*>(t->data)[1], -3.5f);
}

TEST(Safetensors, MalformedFiles) {
  const std::string f8(8, '\0');
  const auto one = [](const std::string& entry) { return make_file("{" + entry + "}", std::string(8, '\0')); };
  expect_load_error("empty", "", StatusCode::kDataLoss, "truncated");
  expect_load_error("short", "abc", StatusCode::kDataLoss, "truncated");
  expect_load_error("header_past_eof", Bytes().u64(100).str("{}").data(), StatusCode::kDataLoss,
                    "runs past the end");
  expect_load_error("header_huge", Bytes().u64(uint64_t{1} << 62).str("{}").data(), StatusCode::kDataLoss,
                    "runs past the end");
  expect_load_error("bad_json", make_file("{\"a\": [1, 2", ""), StatusCode::kDataLoss, "invalid JSON");
  expect_load_error("not_object", make_file("[1, 2]", ""), StatusCode::kDataLoss, "not a JSON object");
  expect_load_error("duplicate_key",
                    one(R"("t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]})"),
                    StatusCode::kDataLoss, "appears twice");
  expect_load_error("entry_not_object", one(R"("t": 5)"), StatusCode::kDataLoss, "not an object");
  expect_load_error("no_dtype", one(R"("t":{"shape":[2],"data_offsets":[0,8]})"), StatusCode::kDataLoss,
                    "\"dtype\"");
  expect_load_error("unknown_dtype", one(R"("t":{"dtype":"F33","shape":[2],"data_offsets":[0,8]})"),
                    StatusCode::kDataLoss, "unknown dtype 'F33'");
  expect_load_error("unsupported_dtype", one(R"("ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]})"),
                    StatusCode::kUnimplemented, "tensor 'ids' has dtype I64");
  expect_load_error("negative_dim", one(R"("t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"),
                    StatusCode::kDataLoss, "negative dimension -2");
  expect_load_error("float_dim", one(R"("t":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]})"),
                    StatusCode::kDataLoss, "not a non-negative integer");
  expect_load_error("overflowing_dims",
                    one(R"("t":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]})"),
                    StatusCode::kDataLoss, "64 bits");
  expect_load_error("overflowing_bytes",
                    one(R"("t":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]})"),
                    StatusCode::kDataLoss, "64 bits");
  expect_load_error("dim_beyond_int64",
                    one(R"("t":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]})"),
                    StatusCode::kDataLoss, "too large");
  expect_load_error("offsets_missing", one(R"("t":{"dtype":"F32","shape":[2]})"), StatusCode::kDataLoss,
                    "data_offsets");
  expect_load_error("offsets_three", one(R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]})"),
                    StatusCode::kDataLoss, "data_offsets");
  expect_load_error("offsets_negative", one(R"("t":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]})"),
                    StatusCode::kDataLoss, "data_offsets");
  expect_load_error("offsets_reversed", one(R"("t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]})"),
                    StatusCode::kDataLoss, "reversed");
  expect_load_error("offsets_past_end", one(R"("t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})"),
                    StatusCode::kDataLoss, "past the end");
  expect_load_error("offsets_huge",
                    one(R"("t":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551608,18446744073709551615]})"),
                    StatusCode::kDataLoss, "past the end");
  expect_load_error("offsets_wrong_size", one(R"("t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]})"),
                    StatusCode::kDataLoss, "needs 12");
  expect_load_error("overlap",
                    one(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]})"),
                    StatusCode::kDataLoss, "overlap");
  expect_load_error("metadata_not_string", one(R"("__metadata__":{"format":1})"), StatusCode::kDataLoss,
                    "__metadata__");
  expect_load_error("metadata_not_object", one(R"("__metadata__":[])"), StatusCode::kDataLoss, "__metadata__");

  Result<TensorStore> missing = load_safetensors(testing::temp_dir("safetensors_bad") + "/nope.safetensors");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope.safetensors"), std::string::npos);
}

// A header listing 100,000 tensors (about 6 MB) loads in a moment: parsing is linear in the entry count (it was
// quadratic, over two minutes for this file), and duplicate keys are still caught among that many.
TEST(Safetensors, HeaderWithManyTensorsParsesInLinearTime) {
  constexpr int kTensors = 100000;
  std::string header = "{";
  for (int i = 0; i < kTensors; ++i) {
    if (i > 0) header += ",";
    header += "\"t" + std::to_string(i) + "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" +
              std::to_string(4 * i) + "," + std::to_string(4 * i + 4) + "]}";
  }
  const std::string data(4 * kTensors, '\0');
  const std::string path = testing::temp_dir("safetensors_many") + "/many.safetensors";
  write_file(path, make_file(header + "}", data));
  const auto start = std::chrono::steady_clock::now();
  Result<TensorStore> r = load_safetensors(path);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->size(), static_cast<size_t>(kTensors));
  ASSERT_NE(r->find("t99999"), nullptr);
  EXPECT_EQ(r->find("t99999")->shape, (std::vector<int64_t>{1}));
  EXPECT_LT(seconds, 10.0 * testing::sanitizer_slowdown()) << "loading a header of " << kTensors << " tensors took " << seconds << " s";

  // The same entries with the first one repeated at the end: still an error, found as fast.
  const std::string dup = header + ",\"t0\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  write_file(path, make_file(dup, data));
  const auto start2 = std::chrono::steady_clock::now();
  Result<TensorStore> r2 = load_safetensors(path);
  const double seconds2 = std::chrono::duration<double>(std::chrono::steady_clock::now() - start2).count();
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r2.status().message().find("'t0' appears twice"), std::string::npos) << r2.status().to_string();
  EXPECT_LT(seconds2, 10.0 * testing::sanitizer_slowdown());
}

TEST(Safetensors, EveryTruncationAndCorruptionIsHandled) {
  const std::string dir = testing::temp_dir("safetensors_fuzz");
  const std::string good_path = dir + "/good.safetensors";
  const std::vector<float> a = iota_f32(4, 1.f);
  const std::vector<uint16_t> b = to_16(DType::kBF16, iota_f32(3, 1.f));
  ASSERT_TRUE(write_safetensors(good_path,
                                {{"a", TensorView{DType::kF32, {2, 2}, a.data()}},
                                 {"b", TensorView{DType::kBF16, {3}, b.data()}}},
                                {{"format", "pt"}})
                  .ok());
  const std::string good = read_file(good_path);
  const std::string path = dir + "/bad.safetensors";
  for (size_t n = 0; n < good.size(); ++n) {
    write_file(path, good.substr(0, n));
    Result<TensorStore> r = load_safetensors(path);
    EXPECT_FALSE(r.ok()) << "a " << n << "-byte prefix loaded";
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().to_string();
    }
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 400; ++i) {
    std::string bad = good;
    const size_t pos = rng() % bad.size();
    bad[pos] = static_cast<char>(rng() % 256);
    write_file(path, bad);
    Result<TensorStore> r = load_safetensors(path);  // must not crash; any outcome is fine
    if (r.ok()) {
      for (const auto& [name, view] : r->tensors()) EXPECT_GE(view.num_elements(), 0);
    }
  }
}

// ---- folders ----

class SafetensorsDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir("safetensors_dir_" +
                             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    ASSERT_TRUE(write_safetensors(dir_ + "/model-00001-of-00002.safetensors",
                                  {{"embed", TensorView{DType::kF32, {2, 2}, a_.data()}},
                                   {"layer.0", TensorView{DType::kF32, {4}, a_.data()}}},
                                  {{"format", "pt"}})
                    .ok());
    ASSERT_TRUE(write_safetensors(dir_ + "/model-00002-of-00002.safetensors",
                                  {{"layer.1", TensorView{DType::kF32, {1, 4}, b_.data()}}},
                                  {{"format", "pt"}, {"lm_head", "embed"}})
                    .ok());
  }
  void write_index(const std::string& weight_map) {
    write_file(dir_ + "/model.safetensors.index.json",
               R"({"metadata": {"total_size": 48}, "weight_map": )" + weight_map + "}");
  }
  const std::string good_map_ = R"({"embed": "model-00001-of-00002.safetensors",
                                    "layer.0": "model-00001-of-00002.safetensors",
                                    "layer.1": "model-00002-of-00002.safetensors"})";
  std::string dir_;
  std::vector<float> a_ = iota_f32(4, 1.f);
  std::vector<float> b_ = iota_f32(4, 10.f);
};

TEST_F(SafetensorsDir, LoadsShardsFromTheIndex) {
  write_index(good_map_);
  Result<TensorStore> r = load_safetensors_dir(dir_);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->names(), (std::vector<std::string>{"embed", "layer.0", "layer.1", "lm_head"}));
  EXPECT_TRUE(points_into_mapping_of(r->find("embed")->data, dir_ + "/model-00001-of-00002.safetensors"));
  EXPECT_TRUE(points_into_mapping_of(r->find("layer.1")->data, dir_ + "/model-00002-of-00002.safetensors"));
  EXPECT_EQ(r->find("lm_head")->data, r->find("embed")->data);  // an alias across shards
  EXPECT_EQ(static_cast<const float*>(r->find("layer.1")->data)[3], 13.f);
}

TEST_F(SafetensorsDir, MissingShardIsNotFound) {
  write_index(R"({"embed": "model-00001-of-00002.safetensors", "x": "model-00003-of-00003.safetensors"})");
  Result<TensorStore> r = load_safetensors_dir(dir_);
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().to_string();
  EXPECT_NE(r.status().message().find("model-00003-of-00003.safetensors"), std::string::npos);
  EXPECT_NE(r.status().message().find("index.json"), std::string::npos);
}

TEST_F(SafetensorsDir, BadIndexes) {
  const auto expect = [&](const std::string& index, StatusCode code, const std::string& words) {
    write_file(dir_ + "/model.safetensors.index.json", index);
    Result<TensorStore> r = load_safetensors_dir(dir_);
    ASSERT_FALSE(r.ok()) << index;
    EXPECT_EQ(r.status().code(), code) << r.status().to_string();
    EXPECT_NE(r.status().message().find(words), std::string::npos) << index << " -> " << r.status().to_string();
    EXPECT_NE(r.status().message().find(dir_), std::string::npos) << r.status().to_string();
  };
  expect("{not json", StatusCode::kDataLoss, "invalid JSON");
  expect(R"({"metadata": {}})", StatusCode::kDataLoss, "weight_map");
  expect(R"({"weight_map": {}})", StatusCode::kDataLoss, "empty");
  expect(R"({"weight_map": {"embed": 3}})", StatusCode::kDataLoss, "not the name of a file");
  expect(R"({"weight_map": {"embed": "../model-00001-of-00002.safetensors"}})", StatusCode::kDataLoss,
         "not the name of a file");
  expect(R"({"weight_map": {"embed": "model-00002-of-00002.safetensors",
                            "layer.1": "model-00001-of-00002.safetensors"}})",
         StatusCode::kDataLoss, "but it is in");
  expect(R"({"weight_map": {"ghost": "model-00001-of-00002.safetensors"}})", StatusCode::kDataLoss,
         "does not hold it");
  // A tensor in two shards.
  ASSERT_TRUE(write_safetensors(dir_ + "/model-00002-of-00002.safetensors",
                                {{"embed", TensorView{DType::kF32, {4}, b_.data()}}})
                  .ok());
  expect(R"({"weight_map": )" + good_map_ + "}", StatusCode::kDataLoss, "also in the shard");
}

TEST_F(SafetensorsDir, SingleFileAndMissingFolders) {
  ASSERT_TRUE(write_safetensors(dir_ + "/model.safetensors", {{"w", TensorView{DType::kF32, {4}, a_.data()}}}).ok());
  Result<TensorStore> r = load_safetensors_dir(dir_);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->names(), (std::vector<std::string>{"w"}));

  const std::string empty = testing::temp_dir("safetensors_dir_empty");
  EXPECT_EQ(load_safetensors_dir(empty).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(load_safetensors_dir(empty + "/nope").status().code(), StatusCode::kNotFound);
}

// A FIFO in place of the weights once blocked the load for good, waiting for a writer.
TEST_F(SafetensorsDir, AFifoAsTheFileOrAShardIsRefusedWithoutBlocking) {
  const auto expect_refused = [&](const std::string& fifo) {
    std::filesystem::remove(fifo);
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    const Status st =
        testing::status_without_blocking_on_fifo(fifo, [&] { return load_safetensors_dir(dir_).status(); });
    EXPECT_NE(st.message().find(fifo + " is not a regular file"), std::string::npos) << st.to_string();
  };
  write_index(good_map_);
  expect_refused(dir_ + "/model-00002-of-00002.safetensors");
  std::filesystem::remove(dir_ + "/model.safetensors.index.json");
  expect_refused(dir_ + "/model.safetensors");
}

// A dangling or looping link named model.safetensors (or the index, or a shard) was reported as the folder holding
// neither file, or the shard as missing: the error names the link and why it cannot be followed.
TEST_F(SafetensorsDir, BrokenLinksAreNamedAsSuch) {
  const auto expect_broken = [&](const std::string& link, const std::string& reason) {
    const Status st = load_safetensors_dir(dir_).status();
    EXPECT_EQ(st.code(), StatusCode::kNotFound) << st.to_string();
    EXPECT_NE(st.message().find(link + " is a symbolic link that cannot be followed (" + reason + ")"),
              std::string::npos)
        << st.to_string();
  };
  const std::string single = dir_ + "/model.safetensors";
  std::filesystem::create_symlink(dir_ + "/absent", single);
  expect_broken(single, "No such file or directory");
  std::filesystem::remove(single);
  std::filesystem::create_symlink(single, single);
  expect_broken(single, "Too many levels of symbolic links");
  const std::string index = dir_ + "/model.safetensors.index.json";
  std::filesystem::create_symlink(dir_ + "/absent", index);
  expect_broken(index, "No such file or directory");
  std::filesystem::remove(index);
  write_index(good_map_);
  const std::string shard = dir_ + "/model-00002-of-00002.safetensors";
  std::filesystem::remove(shard);
  std::filesystem::create_symlink(dir_ + "/absent", shard);
  expect_broken(shard, "No such file or directory");
}

// ---- the real model in ../shared ----

TEST(Safetensors, TinyStories656k) {
  KV_REQUIRE_SHARED("models/tinystories-656k/model.safetensors");
  const std::string dir = testing::shared_dir() + "/models/tinystories-656k";
  Result<TensorStore> r = load_safetensors_dir(dir);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const TensorStore& store = *r;
  EXPECT_EQ(store.size(), 21u);  // 20 stored + the tied embedding
  const struct {
    const char* name;
    std::vector<int64_t> shape;
  } kExpected[] = {
      {"model.embed_tokens.weight", {2048, 128}},
      {"lm_head.weight", {2048, 128}},
      {"model.layers.0.self_attn.k_proj.weight", {64, 128}},
      {"model.layers.1.mlp.down_proj.weight", {128, 384}},
      {"model.norm.weight", {128}},
  };
  for (const auto& e : kExpected) {
    const TensorView* t = store.find(e.name);
    ASSERT_NE(t, nullptr) << e.name;
    EXPECT_EQ(t->dtype, DType::kF32) << e.name;
    EXPECT_EQ(t->shape, e.shape) << e.name;
    EXPECT_TRUE(points_into_mapping_of(t->data, dir + "/model.safetensors")) << e.name;
  }
  EXPECT_EQ(store.find("model.embed_tokens.weight")->data, store.find("lm_head.weight")->data);
  EXPECT_EQ(store.metadata().at("format"), "pt");
  // RMSNorm weights of a trained model are positive and near 1.
  const auto* norm = static_cast<const float*>(store.find("model.norm.weight")->data);
  EXPECT_GT(norm[0], 0.f);
  EXPECT_LT(norm[0], 20.f);
}

}  // namespace
}  // namespace kvshare
