#include "formats/gguf.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "formats/format_test_util.h"
#include "test_util.h"

namespace kvshare {
namespace {

using testing::Bytes;
using testing::points_into_mapping_of;
using testing::read_file;
using testing::write_file;

constexpr uint32_t kU32 = static_cast<uint32_t>(GgufType::kUint32);
constexpr uint32_t kStr = static_cast<uint32_t>(GgufType::kString);
constexpr uint32_t kArr = static_cast<uint32_t>(GgufType::kArray);

// The start of a GGUF file: magic, version, counts.
Bytes header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
  Bytes b;
  b.str("GGUF").u32(version).u64(tensors).u64(kvs);
  return b;
}

// A tensor info: name, dims (innermost first, as in the file), type, offset.
Bytes& tensor_info(Bytes& b, const std::string& name, const std::vector<uint64_t>& ne, uint32_t type, uint64_t off) {
  b.gstr(name).u32(static_cast<uint32_t>(ne.size()));
  for (uint64_t d : ne) b.u64(d);
  return b.u32(type).u64(off);
}

void expect_open_error(const std::string& name, const std::string& bytes, StatusCode code, const std::string& words) {
  const std::string path = testing::temp_dir("gguf_bad") + "/" + name + ".gguf";
  write_file(path, bytes);
  Result<GgufFile> r = GgufFile::open(path);
  ASSERT_FALSE(r.ok()) << name << " opened";
  EXPECT_EQ(r.status().code(), code) << name << ": " << r.status().to_string();
  EXPECT_NE(r.status().message().find(path), std::string::npos) << name << ": " << r.status().to_string();
  EXPECT_NE(r.status().message().find(words), std::string::npos) << name << ": " << r.status().to_string();
}

std::vector<float> wave(size_t n, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * std::sin(0.3f * static_cast<float>(i));
  return v;
}

struct RoundTripData {
  std::vector<float> f32 = wave(15, 1.f);
  std::vector<uint16_t> f16, bf16;
  std::vector<uint8_t> q8;
  std::vector<float> last = wave(8, 2.f);  // 32 bytes: the file ends with no padding
  RoundTripData() {
    const std::vector<float> x = wave(14, 3.f);
    f16.resize(14);
    from_f32(DType::kF16, x.data(), f16.data(), 14);
    const std::vector<float> y = wave(12, 0.5f);
    bf16.resize(12);
    from_f32(DType::kBF16, y.data(), bf16.data(), 12);
    const std::vector<float> z = wave(128, 4.f);
    q8.resize(dtype_bytes(DType::kQ8_0, 128));
    from_f32(DType::kQ8_0, z.data(), q8.data(), 128);
  }
  std::vector<NamedTensor> tensors() const {
    return {{"w.f32", TensorView{DType::kF32, {3, 5}, f32.data()}},
            {"w.f16", TensorView{DType::kF16, {2, 7}, f16.data()}},
            {"w.bf16", TensorView{DType::kBF16, {4, 3}, bf16.data()}},
            {"w.q8_0", TensorView{DType::kQ8_0, {2, 64}, q8.data()}},
            {"w.last", TensorView{DType::kF32, {2, 1, 2, 2}, last.data()}}};
  }
};

void fill_writer(GgufWriter& w, const RoundTripData& d) {
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.embedding_length", 64);
  w.set_i32("llama.negative", -5);
  w.set_u64("big", uint64_t{1} << 40);
  w.set_i64("huge", int64_t{1} << 62);
  w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_f64("double", 0.125);
  w.set_bool("flag", true);
  w.set_string_array("tokenizer.ggml.tokens", {"<unk>", "", "héllo", std::string("a\0b", 3)});
  w.set_f32_array("tokenizer.ggml.scores", {0.f, -1.5f, 2.25f, 3.f});
  w.set_i32_array("tokenizer.ggml.token_type", {2, 1, 1, 6});
  w.set_value("nested", GgufValue::make_array(GgufType::kArray,
                                              {GgufValue::make_string_array({"x"}),
                                               GgufValue::make_string_array({"y", "z"})}));
  w.set_value("u64s", GgufValue::make_array(GgufType::kUint64, {GgufValue::make_uint(GgufType::kUint64, 1),
                                                               GgufValue::make_uint(GgufType::kUint64, 1ull << 63)}));
  w.set_string("general.name", "first");
  w.set_string("general.name", "replaced");
  for (const NamedTensor& t : d.tensors()) w.add_tensor(t.name, t.view);
}

TEST(Gguf, WriterRoundTrip) {
  const std::string path = testing::temp_dir("gguf_round_trip") + "/m.gguf";
  RoundTripData d;
  GgufWriter w;
  fill_writer(w, d);
  ASSERT_TRUE(w.write(path).ok());

  Result<GgufFile> r = GgufFile::open(path);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const GgufFile& g = *r;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_EQ(g.data_offset() % 32, 0u);
  EXPECT_EQ(g.keys(), (std::vector<std::string>{"general.architecture", "llama.embedding_length", "llama.negative",
                                                "big", "huge", "llama.attention.layer_norm_rms_epsilon", "double",
                                                "flag", "tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                                                "tokenizer.ggml.token_type", "nested", "u64s", "general.name"}));
  EXPECT_EQ(*g.get_string("general.architecture"), "llama");
  EXPECT_EQ(*g.get_string("general.name"), "replaced");
  EXPECT_EQ(*g.get_int("llama.embedding_length"), 64);
  EXPECT_EQ(*g.get_int("llama.negative"), -5);
  EXPECT_EQ(*g.get_int("big"), int64_t{1} << 40);
  EXPECT_EQ(*g.get_int("huge"), int64_t{1} << 62);
  EXPECT_EQ(*g.get_float("llama.attention.layer_norm_rms_epsilon"), static_cast<double>(1e-5f));
  EXPECT_EQ(*g.get_float("double"), 0.125);
  EXPECT_EQ(*g.get_float("llama.embedding_length"), 64.0);  // integers are accepted as floats
  EXPECT_TRUE(*g.get_bool("flag"));
  EXPECT_EQ(g.find("llama.embedding_length")->type(), GgufType::kUint32);
  EXPECT_EQ(*g.get_string_array("tokenizer.ggml.tokens"),
            (std::vector<std::string>{"<unk>", "", "héllo", std::string("a\0b", 3)}));
  EXPECT_EQ(*g.get_float_array("tokenizer.ggml.scores"), (std::vector<float>{0.f, -1.5f, 2.25f, 3.f}));
  EXPECT_EQ(*g.get_int_array("tokenizer.ggml.token_type"), (std::vector<int32_t>{2, 1, 1, 6}));
  const GgufValue* nested = g.find("nested");
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->array_size(), 2u);
  EXPECT_EQ(nested->at(1).strings(), (std::vector<std::string>{"y", "z"}));
  EXPECT_EQ(*g.find("u64s")->at(1).as_uint(), 1ull << 63);
  EXPECT_EQ(g.find("tokenizer.ggml.tokens")->to_string(), "[STRING x 4: \"<unk>\", \"\", \"héllo\", ...]");

  EXPECT_EQ(g.tensors().size(), 5u);
  for (const NamedTensor& t : d.tensors()) {
    const TensorView* v = g.tensors().find(t.name);
    ASSERT_NE(v, nullptr) << t.name;
    EXPECT_EQ(v->dtype, t.view.dtype) << t.name;
    EXPECT_EQ(v->shape, t.view.shape) << t.name;
    EXPECT_EQ(std::memcmp(v->data, t.view.data, t.view.num_bytes()), 0) << t.name;
    EXPECT_TRUE(points_into_mapping_of(v->data, path)) << t.name << " was copied";
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v->data) % 32, 0u) << t.name;
  }
  EXPECT_EQ(*g.tensor_type_id("w.q8_0"), 8u);
  EXPECT_EQ(*g.tensor_type_id("w.bf16"), 30u);
  EXPECT_EQ(g.tensor_type_id("nope"), nullptr);

  // On disk, ne[] is innermost first: w.f32 {3, 5} is stored as ne {5, 3}.
  const std::string bytes = read_file(path);
  const std::string name = "w.f32";
  const size_t at = bytes.find(name);
  ASSERT_NE(at, std::string::npos);
  uint32_t n_dims;
  uint64_t ne[2];
  std::memcpy(&n_dims, bytes.data() + at + name.size(), 4);
  std::memcpy(ne, bytes.data() + at + name.size() + 4, 16);
  EXPECT_EQ(n_dims, 2u);
  EXPECT_EQ(ne[0], 5u);
  EXPECT_EQ(ne[1], 3u);
}

TEST(Gguf, CustomAlignmentAndScalar) {
  const std::string path = testing::temp_dir("gguf_alignment") + "/m.gguf";
  const float one = 1.f;
  const float eight[8] = {};
  GgufWriter w;
  w.set_u32("general.alignment", 64);
  w.add_tensor("scalar", TensorView{DType::kF32, {}, &one});
  w.add_tensor("v", TensorView{DType::kF32, {8}, eight});
  ASSERT_TRUE(w.write(path).ok());
  Result<GgufFile> r = GgufFile::open(path);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->alignment(), 64u);
  EXPECT_EQ(r->tensors().find("scalar")->shape, (std::vector<int64_t>{1}));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(r->tensors().find("v")->data) % 64, 0u);
}

TEST(Gguf, WriterRejectsBadInput) {
  const std::string path = testing::temp_dir("gguf_writer_bad") + "/m.gguf";
  const float f[64] = {};
  const auto expect_invalid = [&](GgufWriter& w, const std::string& words) {
    Status s = w.write(path);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find(words), std::string::npos) << s.to_string();
    EXPECT_FALSE(file_exists(path));
  };
  {
    GgufWriter w;
    w.add_tensor("a", TensorView{DType::kF32, {1}, f});
    w.add_tensor("a", TensorView{DType::kF32, {1}, f});
    expect_invalid(w, "twice");
  }
  {
    GgufWriter w;
    w.add_tensor("a", TensorView{DType::kF32, {1, 1, 1, 1, 1}, f});
    expect_invalid(w, "dimensions");
  }
  {
    GgufWriter w;
    w.add_tensor("q", TensorView{DType::kQ8_0, {33}, f});
    expect_invalid(w, "block size");
  }
  {
    GgufWriter w;
    w.add_tensor(std::string(64, 'n'), TensorView{DType::kF32, {1}, f});
    expect_invalid(w, "longer than 63");
  }
  {
    GgufWriter w;
    w.set_u64("general.alignment", 32);
    expect_invalid(w, "UINT32");
  }
  {
    GgufWriter w;
    w.set_u32("general.alignment", 48);
    expect_invalid(w, "power of two");
  }
}

TEST(Gguf, GetterErrorsNameTheKey) {
  const std::string path = testing::temp_dir("gguf_getters") + "/m.gguf";
  GgufWriter w;
  w.set_string("s", "text");
  w.set_u64("too_big", ~uint64_t{0});
  w.set_value("i8", GgufValue::make_int(GgufType::kInt8, -3));
  w.set_value("u16", GgufValue::make_uint(GgufType::kUint16, 65535));
  w.set_value("i64s", GgufValue::make_array(GgufType::kInt64, {GgufValue::make_int(GgufType::kInt64, 1),
                                                               GgufValue::make_int(GgufType::kInt64, 1ll << 40)}));
  w.set_value("u8s", GgufValue::make_array(GgufType::kUint8, {GgufValue::make_uint(GgufType::kUint8, 200)}));
  w.set_value("bools", GgufValue::make_array(GgufType::kBool, {GgufValue::make_bool(true)}));
  w.set_i32_array("i32s", {-1, 7});
  ASSERT_TRUE(w.write(path).ok());
  Result<GgufFile> r = GgufFile::open(path);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const GgufFile& g = *r;

  const auto expect = [&](const Status& s, StatusCode code, const std::string& key) {
    EXPECT_EQ(s.code(), code) << s.to_string();
    EXPECT_NE(s.message().find("'" + key + "'"), std::string::npos) << s.to_string();
    EXPECT_NE(s.message().find(path), std::string::npos) << s.to_string();
  };
  expect(g.get_string("absent").status(), StatusCode::kNotFound, "absent");
  expect(g.get_int("absent").status(), StatusCode::kNotFound, "absent");
  expect(g.get_int("s").status(), StatusCode::kInvalidArgument, "s");
  expect(g.get_float("s").status(), StatusCode::kInvalidArgument, "s");
  expect(g.get_bool("s").status(), StatusCode::kInvalidArgument, "s");
  expect(g.get_string("i8").status(), StatusCode::kInvalidArgument, "i8");
  expect(g.get_int("too_big").status(), StatusCode::kOutOfRange, "too_big");
  expect(g.get_uint("i8").status(), StatusCode::kOutOfRange, "i8");
  expect(g.get_string_array("s").status(), StatusCode::kInvalidArgument, "s");
  expect(g.get_float_array("s").status(), StatusCode::kInvalidArgument, "s");
  expect(g.get_int_array("bools").status(), StatusCode::kInvalidArgument, "bools");
  expect(g.get_int_array("i64s").status(), StatusCode::kOutOfRange, "i64s");
  EXPECT_EQ(*g.get_int("i8"), -3);
  EXPECT_EQ(*g.get_int("u16"), 65535);
  EXPECT_EQ(*g.get_uint("too_big"), ~uint64_t{0});
  EXPECT_EQ(*g.get_float("i8"), -3.0);
  EXPECT_EQ(*g.get_int_array("u8s"), (std::vector<int32_t>{200}));
  EXPECT_EQ(*g.get_float_array("i32s"), (std::vector<float>{-1.f, 7.f}));
  EXPECT_EQ(*g.get_int_array("i32s"), (std::vector<int32_t>{-1, 7}));
  EXPECT_TRUE(g.tensors().empty());
}

TEST(Gguf, AcceptsVersion2) {
  Bytes b = header(1, 1, 2);
  b.gstr("general.architecture").u32(kStr).gstr("llama");
  tensor_info(b, "t", {2}, 0, 0).pad_to(32).f32(1.f).f32(2.f);
  const std::string path = testing::temp_dir("gguf_v2") + "/m.gguf";
  write_file(path, b.data());
  Result<GgufFile> r = GgufFile::open(path);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->version(), 2u);
  EXPECT_EQ(static_cast<const float*>(r->tensors().find("t")->data)[1], 2.f);
}

TEST(Gguf, MalformedFiles) {
  const auto with_tensor = [](const std::string& name, const std::vector<uint64_t>& ne, uint32_t type,
                              uint64_t offset, size_t data_bytes) {
    Bytes b = header(1, 0);
    tensor_info(b, name, ne, type, offset).pad_to(32).zeros(data_bytes);
    return b.data();
  };
  expect_open_error("empty", "", StatusCode::kDataLoss, "truncated");
  expect_open_error("bad_magic", "GGML\x03\0\0\0", StatusCode::kDataLoss, "not a GGUF file");
  expect_open_error("magic_only", "GGUF", StatusCode::kDataLoss, "truncated");
  expect_open_error("short_header", header(0, 0).data().substr(0, 15), StatusCode::kDataLoss, "truncated");
  expect_open_error("v1", header(0, 0, 1).data(), StatusCode::kUnimplemented, "version 1");
  expect_open_error("v9", header(0, 0, 9).data(), StatusCode::kUnimplemented, "version 9");
  expect_open_error("big_endian", header(0, 0, 0x03000000).data(), StatusCode::kUnimplemented, "big-endian");
  expect_open_error("absurd_kv_count", header(0, uint64_t{1} << 60).data(), StatusCode::kDataLoss,
                    "1152921504606846976 metadata entries");
  expect_open_error("absurd_tensor_count", header(uint64_t{1} << 60, 0).data(), StatusCode::kDataLoss,
                    "1152921504606846976 tensors");
  expect_open_error("key_past_eof", header(0, 1).u64(uint64_t{1} << 40).str("abc").zeros(20).data(), StatusCode::kDataLoss,
                    "runs past the end");
  expect_open_error("value_truncated", header(0, 1).gstr("k").u32(kU32).u8(1).data(), StatusCode::kDataLoss,
                    "'k'");
  expect_open_error("string_value_past_eof", header(0, 1).gstr("k").u32(kStr).u64(1000).str("x").data(),
                    StatusCode::kDataLoss, "runs past the end");
  expect_open_error("absurd_string_array",
                    header(0, 1).gstr("tokens").u32(kArr).u32(kStr).u64(uint64_t{1} << 60).gstr("a").data(),
                    StatusCode::kDataLoss, "1152921504606846976 STRING values");
  expect_open_error("array_string_past_eof",
                    header(0, 1).gstr("tokens").u32(kArr).u32(kStr).u64(2).gstr("a").u64(99).str("b").data(),
                    StatusCode::kDataLoss, "runs past the end");
  expect_open_error("absurd_u32_array", header(0, 1).gstr("a").u32(kArr).u32(kU32).u64(1000).u32(1).data(),
                    StatusCode::kDataLoss, "1000 UINT32 values");
  expect_open_error("unknown_value_type", header(0, 1).gstr("k").u32(99).u32(0).data(), StatusCode::kDataLoss,
                    "unknown value type 99");
  expect_open_error("unknown_array_type", header(0, 1).gstr("k").u32(kArr).u32(77).u64(0).data(),
                    StatusCode::kDataLoss, "unknown array element type 77");
  {
    Bytes b = header(0, 1);
    b.gstr("deep").u32(kArr);
    for (int i = 0; i < 20; ++i) b.u32(kArr).u64(1);
    b.u32(kU32).u64(0);
    expect_open_error("nested_too_deep", b.data(), StatusCode::kDataLoss, "nested");
  }
  expect_open_error("bad_bool", header(0, 1).gstr("b").u32(static_cast<uint32_t>(GgufType::kBool)).u8(7).data(),
                    StatusCode::kDataLoss, "neither 0 nor 1");
  expect_open_error("duplicate_key", header(0, 2).gstr("k").u32(kU32).u32(1).gstr("k").u32(kU32).u32(2).data(),
                    StatusCode::kDataLoss, "appears twice");
  expect_open_error("alignment_zero", header(0, 1).gstr("general.alignment").u32(kU32).u32(0).data(),
                    StatusCode::kDataLoss, "general.alignment");
  expect_open_error("alignment_three", header(0, 1).gstr("general.alignment").u32(kU32).u32(3).data(),
                    StatusCode::kDataLoss, "power of two");
  expect_open_error("alignment_string", header(0, 1).gstr("general.alignment").u32(kStr).gstr("32").data(),
                    StatusCode::kDataLoss, "general.alignment");
  expect_open_error("tensor_name_past_eof", header(1, 0).u64(1ull << 50).zeros(20).data(), StatusCode::kDataLoss,
                    "runs past the end");
  expect_open_error("five_dims", with_tensor("t", {1, 1, 1, 1, 1}, 0, 0, 32), StatusCode::kDataLoss,
                    "5 dimensions");
  expect_open_error("dim_negative", with_tensor("t", {~uint64_t{0}}, 0, 0, 32), StatusCode::kDataLoss,
                    "negative");
  expect_open_error("dims_overflow", with_tensor("t", {1ull << 40, 1ull << 40}, 0, 0, 32), StatusCode::kDataLoss,
                    "64 bits");
  expect_open_error("bytes_overflow", with_tensor("t", {1ull << 62}, 0, 0, 32), StatusCode::kDataLoss, "64 bits");
  expect_open_error("unsupported_type", with_tensor("blk.0.ffn_up.weight", {256}, 12, 0, 256),
                    StatusCode::kUnimplemented, "tensor 'blk.0.ffn_up.weight' has type Q4_K");
  expect_open_error("unknown_type", with_tensor("t", {32}, 1234, 0, 256), StatusCode::kUnimplemented, "1234");
  expect_open_error("q8_0_partial_block", with_tensor("t", {33}, 8, 0, 256), StatusCode::kDataLoss, "block size");
  expect_open_error("misaligned_offset", with_tensor("t", {2}, 0, 4, 64), StatusCode::kDataLoss,
                    "not a multiple of the alignment");
  expect_open_error("data_past_eof", with_tensor("t", {64}, 0, 0, 100), StatusCode::kDataLoss, "past the end");
  expect_open_error("offset_past_eof", with_tensor("t", {1}, 0, 1ull << 62, 64), StatusCode::kDataLoss,
                    "past the end");
  expect_open_error("offset_near_max", with_tensor("t", {8}, 0, ~uint64_t{31}, 64), StatusCode::kDataLoss,
                    "past the end");
  expect_open_error("infos_truncated", with_tensor("t", {2}, 0, 0, 0).substr(0, 40), StatusCode::kDataLoss,
                    "truncated");
  {
    Bytes b = header(1, 0);
    tensor_info(b, "t", {2}, 0, 0);
    expect_open_error("data_section_missing", b.data(), StatusCode::kDataLoss, "past the end");
  }
  {
    Bytes b = header(2, 0);
    tensor_info(b, "a", {16}, 0, 0);
    tensor_info(b, "b", {16}, 0, 32).pad_to(32).zeros(96);
    expect_open_error("overlap", b.data(), StatusCode::kDataLoss, "overlap");
  }
  {
    Bytes b = header(2, 0);
    tensor_info(b, "a", {8}, 0, 0);
    tensor_info(b, "a", {8}, 0, 32).pad_to(32).zeros(64);
    expect_open_error("duplicate_tensor", b.data(), StatusCode::kDataLoss, "appears twice");
  }
  Result<GgufFile> missing = GgufFile::open(testing::temp_dir("gguf_bad") + "/nope.gguf");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope.gguf"), std::string::npos);
}

// A FIFO given as the .gguf path once blocked the load for good, waiting for a writer.
TEST(Gguf, AFifoIsRefusedWithoutBlocking) {
  const std::string fifo = testing::temp_dir("gguf_fifo") + "/model.gguf";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const Status st = testing::status_without_blocking_on_fifo(fifo, [&] { return GgufFile::open(fifo).status(); });
  EXPECT_NE(st.message().find(fifo + " is not a regular file"), std::string::npos) << st.to_string();
}

TEST(Gguf, EveryTruncationAndCorruptionIsHandled) {
  const std::string dir = testing::temp_dir("gguf_fuzz");
  const std::string good_path = dir + "/good.gguf";
  RoundTripData d;
  GgufWriter w;
  fill_writer(w, d);
  ASSERT_TRUE(w.write(good_path).ok());
  const std::string good = read_file(good_path);
  Result<GgufFile> ok = GgufFile::open(good_path);
  ASSERT_TRUE(ok.ok());
  const std::string path = dir + "/bad.gguf";
  for (size_t n = 0; n < good.size(); ++n) {
    write_file(path, good.substr(0, n));
    Result<GgufFile> r = GgufFile::open(path);
    EXPECT_FALSE(r.ok()) << "a " << n << "-byte prefix opened";
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().to_string();
    }
  }
  // Corrupt the metadata and tensor infos (everything before the data), a byte or a 64-bit field at a time.
  std::mt19937 rng(11);
  const size_t meta_end = ok->data_offset();
  for (int i = 0; i < 1500; ++i) {
    std::string bad = good;
    const size_t pos = 4 + rng() % (meta_end - 4);
    if (i % 2 == 0) {
      bad[pos] = static_cast<char>(rng() % 256);
    } else {
      const uint64_t v = (i % 4 == 1) ? ~uint64_t{0} >> (rng() % 64) : uint64_t{1} << (rng() % 64);
      std::memcpy(&bad[pos], &v, std::min<size_t>(8, bad.size() - pos));
    }
    write_file(path, bad);
    Result<GgufFile> r = GgufFile::open(path);  // must not crash; any outcome is fine
    if (r.ok()) {
      for (const auto& [name, view] : r->tensors().tensors()) EXPECT_GE(view.num_elements(), 0);
    }
  }
}

// ---- the real files in ../shared ----

TEST(Gguf, Stories260K) {
  KV_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  const std::string path = testing::shared_dir() + "/models/stories260K/stories260K.gguf";
  Result<GgufFile> r = GgufFile::open(path);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const GgufFile& g = *r;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(*g.get_string("general.architecture"), "llama");
  EXPECT_EQ(*g.get_int("llama.embedding_length"), 64);
  EXPECT_EQ(*g.get_int("llama.block_count"), 5);
  EXPECT_EQ(*g.get_int("llama.attention.head_count_kv"), 4);
  EXPECT_NEAR(*g.get_float("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-9);
  EXPECT_EQ(*g.get_string("tokenizer.ggml.model"), "llama");
  Result<std::vector<std::string>> tokens = g.get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok()) << tokens.status().to_string();
  ASSERT_EQ(tokens->size(), 512u);
  EXPECT_EQ((*tokens)[1], "<s>");
  EXPECT_EQ(g.get_float_array("tokenizer.ggml.scores")->size(), 512u);
  EXPECT_EQ(g.get_int_array("tokenizer.ggml.token_type")->size(), 512u);
  EXPECT_EQ(g.tensors().size(), 48u);
  const TensorView* embd = g.tensors().find("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->dtype, DType::kF32);
  EXPECT_EQ(embd->shape, (std::vector<int64_t>{512, 64}));  // ne {64, 512}
  EXPECT_TRUE(points_into_mapping_of(embd->data, path));
  ASSERT_NE(g.tensors().find("output_norm.weight"), nullptr);
  EXPECT_EQ(g.tensors().find("output_norm.weight")->shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(g.tensors().find("blk.0.attn_k.weight")->shape, (std::vector<int64_t>{32, 64}));
}

TEST(Gguf, VocabFilesOpen) {
  KV_REQUIRE_SHARED("tokenizers/vectors");
  const std::string dir = testing::shared_dir() + "/tokenizers/vectors";
  int opened = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".gguf") continue;
    const auto start = std::chrono::steady_clock::now();
    Result<GgufFile> r = GgufFile::open(entry.path().string());
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    Result<std::vector<std::string>> tokens = r->get_string_array("tokenizer.ggml.tokens");
    ASSERT_TRUE(tokens.ok()) << tokens.status().to_string();
    EXPECT_GT(tokens->size(), 1000u) << entry.path();
    EXPECT_TRUE(r->get_string("tokenizer.ggml.model").ok()) << entry.path();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(ms, 2000 * testing::sanitizer_slowdown()) << entry.path();
    ++opened;
  }
  EXPECT_GT(opened, 0);
}

}  // namespace
}  // namespace kvshare
