#include "formats/gguf.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>

#include "core/number_text.h"
#include "formats/io_util.h"

namespace kvshare {

namespace {

using formats_internal::ByteReader;
using formats_internal::checked_align_up;
using formats_internal::checked_tensor_size;
using formats_internal::element_alignment;
using formats_internal::TensorSize;

bool is_unsigned_type(GgufType t) {
  return t == GgufType::kUint8 || t == GgufType::kUint16 || t == GgufType::kUint32 || t == GgufType::kUint64;
}

std::string describe_type(const GgufValue& v) {
  if (!v.is_array()) return gguf_type_name(v.type());
  return std::string("ARRAY of ") + gguf_type_name(v.array_type());
}

// A string from the file, shortened for a message.
std::string shown(const std::string& s) {
  constexpr size_t kMax = 64;
  return "'" + (s.size() <= kMax ? s : s.substr(0, kMax) + "...") + "'";
}

template <typename T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

GgufValue decode_scalar(GgufType t, const uint8_t* p) {
  switch (t) {
    case GgufType::kUint8: return GgufValue::make_uint(t, p[0]);
    case GgufType::kInt8: return GgufValue::make_int(t, load_le<int8_t>(p));
    case GgufType::kUint16: return GgufValue::make_uint(t, load_le<uint16_t>(p));
    case GgufType::kInt16: return GgufValue::make_int(t, load_le<int16_t>(p));
    case GgufType::kUint32: return GgufValue::make_uint(t, load_le<uint32_t>(p));
    case GgufType::kInt32: return GgufValue::make_int(t, load_le<int32_t>(p));
    case GgufType::kFloat32: return GgufValue::make_float(t, load_le<float>(p));
    case GgufType::kBool: return GgufValue::make_bool(p[0] != 0);
    case GgufType::kUint64: return GgufValue::make_uint(t, load_le<uint64_t>(p));
    case GgufType::kInt64: return GgufValue::make_int(t, load_le<int64_t>(p));
    case GgufType::kFloat64: return GgufValue::make_float(t, load_le<double>(p));
    default: break;
  }
  KV_CHECK(false, "decode_scalar: not a scalar type");
  return {};
}

template <typename T>
void append_le(std::vector<uint8_t>& out, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}

// Appends a scalar value's bytes as its type stores them.
void encode_scalar(const GgufValue& v, std::vector<uint8_t>& out) {
  switch (v.type()) {
    case GgufType::kUint8: append_le<uint8_t>(out, static_cast<uint8_t>(*v.as_uint())); return;
    case GgufType::kInt8: append_le<int8_t>(out, static_cast<int8_t>(*v.as_int())); return;
    case GgufType::kUint16: append_le<uint16_t>(out, static_cast<uint16_t>(*v.as_uint())); return;
    case GgufType::kInt16: append_le<int16_t>(out, static_cast<int16_t>(*v.as_int())); return;
    case GgufType::kUint32: append_le<uint32_t>(out, static_cast<uint32_t>(*v.as_uint())); return;
    case GgufType::kInt32: append_le<int32_t>(out, static_cast<int32_t>(*v.as_int())); return;
    case GgufType::kFloat32: append_le<float>(out, static_cast<float>(*v.as_float())); return;
    case GgufType::kBool: append_le<uint8_t>(out, *v.as_bool() ? 1 : 0); return;
    case GgufType::kUint64: append_le<uint64_t>(out, *v.as_uint()); return;
    case GgufType::kInt64: append_le<int64_t>(out, *v.as_int()); return;
    case GgufType::kFloat64: append_le<double>(out, *v.as_float()); return;
    default: break;
  }
  KV_CHECK(false, "encode_scalar: not a scalar type");
}

}  // namespace

// ---- names ----

const char* gguf_type_name(GgufType type) {
  switch (type) {
    case GgufType::kUint8: return "UINT8";
    case GgufType::kInt8: return "INT8";
    case GgufType::kUint16: return "UINT16";
    case GgufType::kInt16: return "INT16";
    case GgufType::kUint32: return "UINT32";
    case GgufType::kInt32: return "INT32";
    case GgufType::kFloat32: return "FLOAT32";
    case GgufType::kBool: return "BOOL";
    case GgufType::kString: return "STRING";
    case GgufType::kArray: return "ARRAY";
    case GgufType::kUint64: return "UINT64";
    case GgufType::kInt64: return "INT64";
    case GgufType::kFloat64: return "FLOAT64";
  }
  return "unknown";
}

const char* ggml_type_name(uint32_t type_id) {
  static const char* const kNames[] = {
      "F32",     "F16",      "Q4_0",     "Q4_1",   "Q4_2",   "Q4_3",       "Q5_0",       "Q5_1",       "Q8_0",  "Q8_1",
      "Q2_K",    "Q3_K",     "Q4_K",     "Q5_K",   "Q6_K",   "Q8_K",       "IQ2_XXS",    "IQ2_XS",     "IQ3_XXS",
      "IQ1_S",   "IQ4_NL",   "IQ3_S",    "IQ2_S",  "IQ4_XS", "I8",         "I16",        "I32",        "I64",
      "F64",     "IQ1_M",    "BF16",     "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0",  "TQ2_0",      "IQ4_NL_4_4",
      "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4"};
  return type_id < std::size(kNames) ? kNames[type_id] : "unknown";
}

uint32_t ggml_type_id(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 0;
    case DType::kF16: return 1;
    case DType::kQ8_0: return 8;
    case DType::kBF16: return 30;
  }
  return 0;
}

// ---- GgufValue ----

bool GgufValue::is_integer_type(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kUint16:
    case GgufType::kInt16:
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kUint64:
    case GgufType::kInt64: return true;
    default: return false;
  }
}

size_t GgufValue::scalar_size(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool: return 1;
    case GgufType::kUint16:
    case GgufType::kInt16: return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32: return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64: return 8;
    default: return 0;
  }
}

GgufValue GgufValue::make_uint(GgufType type, uint64_t v) {
  KV_CHECK(is_unsigned_type(type), "make_uint with a non-unsigned type");
  GgufValue r;
  r.type_ = type;
  r.v_ = v;
  return r;
}

GgufValue GgufValue::make_int(GgufType type, int64_t v) {
  KV_CHECK(is_integer_type(type) && !is_unsigned_type(type), "make_int with a non-signed type");
  GgufValue r;
  r.type_ = type;
  r.v_ = v;
  return r;
}

GgufValue GgufValue::make_float(GgufType type, double v) {
  KV_CHECK(type == GgufType::kFloat32 || type == GgufType::kFloat64, "make_float with a non-float type");
  GgufValue r;
  r.type_ = type;
  r.v_ = v;
  return r;
}

GgufValue GgufValue::make_bool(bool v) {
  GgufValue r;
  r.type_ = GgufType::kBool;
  r.v_ = v;
  return r;
}

GgufValue GgufValue::make_string(std::string v) {
  GgufValue r;
  r.type_ = GgufType::kString;
  r.v_ = std::move(v);
  return r;
}

GgufValue GgufValue::make_string_array(std::vector<std::string> items) {
  GgufValue r;
  r.type_ = GgufType::kArray;
  r.array_type_ = GgufType::kString;
  r.count_ = items.size();
  r.strings_ = std::move(items);
  return r;
}

GgufValue GgufValue::make_scalar_array(GgufType element_type, const void* data, size_t count) {
  const size_t size = scalar_size(element_type);
  KV_CHECK(size != 0, "make_scalar_array with a non-scalar element type");
  GgufValue r;
  r.type_ = GgufType::kArray;
  r.array_type_ = element_type;
  r.count_ = count;
  const auto* p = static_cast<const uint8_t*>(data);
  if (count != 0) r.packed_.assign(p, p + count * size);
  return r;
}

GgufValue GgufValue::make_array(GgufType element_type, const std::vector<GgufValue>& items) {
  GgufValue r;
  r.type_ = GgufType::kArray;
  r.array_type_ = element_type;
  r.count_ = items.size();
  for (const GgufValue& item : items) KV_CHECK(item.type() == element_type, "make_array: mixed element types");
  if (element_type == GgufType::kString) {
    r.strings_.reserve(items.size());
    for (const GgufValue& item : items) r.strings_.push_back(item.string_ref());
  } else if (element_type == GgufType::kArray) {
    r.items_ = items;
  } else {
    KV_CHECK(scalar_size(element_type) != 0, "make_array with an unknown element type");
    r.packed_.reserve(items.size() * scalar_size(element_type));
    for (const GgufValue& item : items) encode_scalar(item, r.packed_);
  }
  return r;
}

Result<int64_t> GgufValue::as_int() const {
  if (!is_integer()) return invalid_argument(std::string("is ") + describe_type(*this) + ", not an integer");
  if (is_unsigned_type(type_)) {
    const uint64_t u = std::get<uint64_t>(v_);
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return out_of_range("is " + std::to_string(u) + ", which does not fit in int64");
    }
    return static_cast<int64_t>(u);
  }
  return std::get<int64_t>(v_);
}

Result<uint64_t> GgufValue::as_uint() const {
  if (!is_integer()) return invalid_argument(std::string("is ") + describe_type(*this) + ", not an integer");
  if (is_unsigned_type(type_)) return std::get<uint64_t>(v_);
  const int64_t i = std::get<int64_t>(v_);
  if (i < 0) return out_of_range("is " + std::to_string(i) + ", not a non-negative integer");
  return static_cast<uint64_t>(i);
}

Result<double> GgufValue::as_float() const {
  if (is_float()) return std::get<double>(v_);
  if (is_integer()) {
    return is_unsigned_type(type_) ? static_cast<double>(std::get<uint64_t>(v_))
                                   : static_cast<double>(std::get<int64_t>(v_));
  }
  return invalid_argument(std::string("is ") + describe_type(*this) + ", not a number");
}

Result<bool> GgufValue::as_bool() const {
  if (!is_bool()) return invalid_argument(std::string("is ") + describe_type(*this) + ", not BOOL");
  return std::get<bool>(v_);
}

Result<std::string> GgufValue::as_string() const {
  if (!is_string()) return invalid_argument(std::string("is ") + describe_type(*this) + ", not STRING");
  return std::get<std::string>(v_);
}

GgufValue GgufValue::at(size_t i) const {
  KV_CHECK(i < count_, "GgufValue::at: index out of range");
  if (array_type_ == GgufType::kString) return make_string(strings_[i]);
  if (array_type_ == GgufType::kArray) return items_[i];
  return decode_scalar(array_type_, packed_.data() + i * scalar_size(array_type_));
}

std::string GgufValue::to_string() const {
  if (is_string()) {
    const std::string& s = string_ref();
    return "\"" + (s.size() <= 40 ? s : s.substr(0, 40) + "...") + "\"";
  }
  if (is_bool()) return std::get<bool>(v_) ? "true" : "false";
  if (is_float()) return number_text(std::get<double>(v_));
  if (is_integer()) {
    return is_unsigned_type(type_) ? std::to_string(std::get<uint64_t>(v_)) : std::to_string(std::get<int64_t>(v_));
  }
  std::string s = std::string("[") + gguf_type_name(array_type_) + " x " + std::to_string(count_);
  constexpr size_t kShown = 3;
  for (size_t i = 0; i < count_ && i < kShown; ++i) s += (i == 0 ? ": " : ", ") + at(i).to_string();
  if (count_ > kShown) s += ", ...";
  return s + "]";
}

// ---- reading ----

namespace {

constexpr uint64_t kMinKvBytes = 8 + 4 + 1;             // empty key, type, a one-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;  // empty name, n_dims 0, type, offset
constexpr uint64_t kMaxAlignment = 1ull << 30;

Result<std::string> read_string(ByteReader& r, const char* what) {
  KV_ASSIGN_OR_RETURN(const uint64_t len, r.read<uint64_t>(what));
  if (len > r.remaining()) {
    return data_loss(std::string(what) + ": string length " + std::to_string(len) + " at offset " +
                     std::to_string(r.pos() - 8) + " runs past the end of the file (" +
                     std::to_string(r.remaining()) + " bytes remain)");
  }
  KV_ASSIGN_OR_RETURN(const std::string_view bytes, r.read_bytes(len, what));
  return std::string(bytes);
}

// The fewest bytes one element of `t` takes in a file (0 for an unknown type).
uint64_t min_element_bytes(GgufType t) {
  if (t == GgufType::kString) return 8;
  if (t == GgufType::kArray) return 4 + 8;
  return GgufValue::scalar_size(t);
}

Result<GgufValue> read_value(ByteReader& r, GgufType type, int depth);

Result<GgufValue> read_array(ByteReader& r, int depth) {
  if (depth >= kGgufMaxArrayNesting) {
    return data_loss("arrays nested more than " + std::to_string(kGgufMaxArrayNesting) + " deep at offset " +
                     std::to_string(r.pos()));
  }
  KV_ASSIGN_OR_RETURN(const uint32_t raw_type, r.read<uint32_t>("an array's element type"));
  const auto element_type = static_cast<GgufType>(raw_type);
  const uint64_t min_bytes = min_element_bytes(element_type);
  if (min_bytes == 0) {
    return data_loss("unknown array element type " + std::to_string(raw_type) + " at offset " +
                     std::to_string(r.pos() - 4));
  }
  KV_ASSIGN_OR_RETURN(const uint64_t count, r.read<uint64_t>("an array's length"));
  if (count > r.remaining() / min_bytes) {
    return data_loss("an array of " + std::to_string(count) + " " + gguf_type_name(element_type) +
                     " values at offset " + std::to_string(r.pos() - 8) + " needs at least " +
                     (count > std::numeric_limits<uint64_t>::max() / min_bytes
                          ? std::string("2^64")
                          : std::to_string(count * min_bytes)) +
                     " bytes, but only " + std::to_string(r.remaining()) + " remain");
  }
  if (element_type == GgufType::kString) {
    std::vector<std::string> items;
    items.reserve(count);  // checked above: count <= remaining / 8
    for (uint64_t i = 0; i < count; ++i) {
      KV_ASSIGN_OR_RETURN(std::string s, read_string(r, "an array's string"));
      items.push_back(std::move(s));
    }
    return GgufValue::make_string_array(std::move(items));
  }
  if (element_type == GgufType::kArray) {
    std::vector<GgufValue> items;
    items.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      KV_ASSIGN_OR_RETURN(GgufValue item, read_value(r, GgufType::kArray, depth + 1));
      items.push_back(std::move(item));
    }
    return GgufValue::make_array(GgufType::kArray, items);
  }
  const uint64_t bytes = count * min_bytes;  // scalar: min_bytes is the element size; checked above
  if (element_type == GgufType::kBool) {
    for (uint64_t i = 0; i < count; ++i) {
      if (r.current()[i] > 1) {
        return data_loss("BOOL array element " + std::to_string(i) + " at offset " + std::to_string(r.pos() + i) +
                         " is " + std::to_string(r.current()[i]) + ", neither 0 nor 1");
      }
    }
  }
  GgufValue v = GgufValue::make_scalar_array(element_type, r.current(), count);
  KV_RETURN_IF_ERROR(r.skip(bytes, "an array's elements"));
  return v;
}

Result<GgufValue> read_value(ByteReader& r, GgufType type, int depth) {
  switch (type) {
    case GgufType::kString: {
      KV_ASSIGN_OR_RETURN(std::string s, read_string(r, "a string value"));
      return GgufValue::make_string(std::move(s));
    }
    case GgufType::kArray: return read_array(r, depth);
    case GgufType::kBool: {
      KV_ASSIGN_OR_RETURN(const uint8_t b, r.read<uint8_t>("a BOOL value"));
      if (b > 1) {
        return data_loss("BOOL value at offset " + std::to_string(r.pos() - 1) + " is " + std::to_string(b) +
                         ", neither 0 nor 1");
      }
      return GgufValue::make_bool(b != 0);
    }
    default: break;
  }
  const size_t size = GgufValue::scalar_size(type);
  if (size == 0) {
    return data_loss("unknown value type " + std::to_string(static_cast<uint32_t>(type)) + " at offset " +
                     std::to_string(r.pos() - 4));
  }
  KV_RETURN_IF_ERROR(r.need(size, gguf_type_name(type)));
  GgufValue v = decode_scalar(type, r.current());
  KV_RETURN_IF_ERROR(r.skip(size, gguf_type_name(type)));
  return v;
}

Result<DType> tensor_dtype(uint32_t type_id, const std::string& name) {
  switch (type_id) {
    case 0: return DType::kF32;
    case 1: return DType::kF16;
    case 8: return DType::kQ8_0;
    case 30: return DType::kBF16;
    default: break;
  }
  return unimplemented("tensor " + shown(name) + " has type " + ggml_type_name(type_id) + " (ggml type " +
                       std::to_string(type_id) + "), which kvshare does not support (supported: F32, F16, BF16, Q8_0)");
}

struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // outermost first
  uint32_t type_id = 0;
  uint64_t offset = 0;
  DType dtype = DType::kF32;
  uint64_t num_bytes = 0;
};

}  // namespace

Result<GgufFile> GgufFile::open(const std::string& path) {
  KV_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
  GgufFile g;
  g.path_ = path;
  Status s = g.parse(file);
  if (!s.ok()) return s.with_context(path);
  return g;
}

Status GgufFile::parse(const std::shared_ptr<MappedFile>& file) {
  ByteReader r(file->data(), file->size());
  KV_RETURN_IF_ERROR(r.need(4, "the magic"));
  if (std::memcmp(r.current(), "GGUF", 4) != 0) {
    char buf[64];
    const uint8_t* m = r.current();
    std::snprintf(buf, sizeof(buf), "%02x %02x %02x %02x", m[0], m[1], m[2], m[3]);
    return data_loss(std::string("not a GGUF file: it starts with the bytes ") + buf + ", not \"GGUF\"");
  }
  KV_RETURN_IF_ERROR(r.skip(4, "the magic"));
  KV_ASSIGN_OR_RETURN(version_, r.read<uint32_t>("the version"));
  if (version_ == 1) return unimplemented("GGUF version 1 is not supported (only 2 and 3)");
  if (version_ != 2 && version_ != 3) {
    if ((version_ & 0xffffu) == 0) {
      return unimplemented("big-endian GGUF (version field " + std::to_string(version_) + ") is not supported");
    }
    return unimplemented("GGUF version " + std::to_string(version_) + " is not supported (only 2 and 3)");
  }
  KV_ASSIGN_OR_RETURN(const uint64_t tensor_count, r.read<uint64_t>("the tensor count"));
  KV_ASSIGN_OR_RETURN(const uint64_t kv_count, r.read<uint64_t>("the metadata count"));
  if (kv_count > r.remaining() / kMinKvBytes) {
    return data_loss("the header claims " + std::to_string(kv_count) + " metadata entries, more than the " +
                     std::to_string(r.remaining()) + " remaining bytes can hold");
  }
  if (tensor_count > r.remaining() / kMinTensorInfoBytes) {
    return data_loss("the header claims " + std::to_string(tensor_count) + " tensors, more than the " +
                     std::to_string(r.remaining()) + " remaining bytes can hold");
  }

  key_order_.reserve(kv_count);
  for (uint64_t i = 0; i < kv_count; ++i) {
    Result<std::string> key = read_string(r, "a metadata key");
    if (!key.ok()) return key.status().with_context("metadata entry " + std::to_string(i));
    const std::string context = "metadata entry " + std::to_string(i) + " (" + shown(*key) + ")";
    Result<uint32_t> type = r.read<uint32_t>("the value type");
    if (!type.ok()) return type.status().with_context(context);
    Result<GgufValue> value = read_value(r, static_cast<GgufType>(*type), 0);
    if (!value.ok()) return value.status().with_context(context);
    if (!values_.emplace(*key, std::move(value).value()).second) {
      return data_loss("metadata key " + shown(*key) + " appears twice");
    }
    key_order_.push_back(std::move(key).value());
  }

  if (const GgufValue* a = find("general.alignment")) {
    Result<uint64_t> alignment = a->as_uint();
    if (!alignment.ok() || *alignment == 0 || (*alignment & (*alignment - 1)) != 0 || *alignment > kMaxAlignment) {
      return data_loss("general.alignment is " + a->to_string() + " (" + describe_type(*a) +
                       "); it must be a power of two no larger than 2^30");
    }
    alignment_ = *alignment;
  }

  std::vector<TensorInfo> infos;
  infos.reserve(tensor_count);  // checked above against the bytes left
  std::map<std::string, size_t> seen;
  for (uint64_t i = 0; i < tensor_count; ++i) {
    TensorInfo t;
    Result<std::string> name = read_string(r, "a tensor name");
    if (!name.ok()) return name.status().with_context("tensor info " + std::to_string(i));
    t.name = std::move(name).value();
    const std::string context = "tensor " + shown(t.name);
    Result<uint32_t> n_dims = r.read<uint32_t>("the dimension count");
    if (!n_dims.ok()) return n_dims.status().with_context(context);
    if (*n_dims > static_cast<uint32_t>(kGgufMaxDims)) {
      return data_loss(context + " has " + std::to_string(*n_dims) + " dimensions; GGUF allows at most " +
                       std::to_string(kGgufMaxDims));
    }
    t.shape.resize(*n_dims);
    for (uint32_t d = 0; d < *n_dims; ++d) {
      Result<uint64_t> ne = r.read<uint64_t>("a dimension");
      if (!ne.ok()) return ne.status().with_context(context);
      if (*ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return data_loss(context + ": dimension " + std::to_string(d) + " is " + std::to_string(*ne) +
                         ", negative as a signed 64-bit count");
      }
      t.shape[*n_dims - 1 - d] = static_cast<int64_t>(*ne);  // ne[] is innermost first
    }
    Result<uint32_t> type_id = r.read<uint32_t>("the tensor type");
    if (!type_id.ok()) return type_id.status().with_context(context);
    t.type_id = *type_id;
    Result<uint64_t> offset = r.read<uint64_t>("the tensor offset");
    if (!offset.ok()) return offset.status().with_context(context);
    t.offset = *offset;
    if (!seen.emplace(t.name, i).second) return data_loss(context + " appears twice");
    infos.push_back(std::move(t));
  }

  if (!checked_align_up(r.pos(), alignment_, &data_offset_)) return data_loss("the tensor data offset overflows");
  const uint64_t file_size = file->size();
  if (!infos.empty() && data_offset_ > file_size) {
    return data_loss("tensor data would start at offset " + std::to_string(data_offset_) +
                     ", past the end of the file (" + std::to_string(file_size) + " bytes)");
  }
  const uint64_t data_size = data_offset_ <= file_size ? file_size - data_offset_ : 0;

  for (TensorInfo& t : infos) {
    const std::string context = "tensor " + shown(t.name);
    KV_ASSIGN_OR_RETURN(t.dtype, tensor_dtype(t.type_id, t.name));
    Result<TensorSize> size = checked_tensor_size(t.dtype, t.shape);
    if (!size.ok()) return size.status().with_context(context);
    t.num_bytes = size->num_bytes;
    if (t.offset % alignment_ != 0) {
      return data_loss(context + " has offset " + std::to_string(t.offset) + ", not a multiple of the alignment " +
                       std::to_string(alignment_));
    }
    if (t.num_bytes > data_size || t.offset > data_size - t.num_bytes) {
      return data_loss(context + " (" + std::to_string(t.num_bytes) + " bytes at data offset " +
                       std::to_string(t.offset) + ") runs past the end of the file: the data section holds " +
                       std::to_string(data_size) + " bytes");
    }
  }

  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& t : infos) {
    if (t.num_bytes > 0) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& prev = *by_offset[i - 1];
    const TensorInfo& cur = *by_offset[i];
    if (cur.offset < prev.offset + prev.num_bytes) {
      return data_loss("tensors " + shown(prev.name) + " (offset " + std::to_string(prev.offset) + ", " +
                       std::to_string(prev.num_bytes) + " bytes) and " + shown(cur.name) + " (offset " +
                       std::to_string(cur.offset) + ") overlap");
    }
  }

  const uint8_t* data = file->data() + data_offset_;
  for (TensorInfo& t : infos) {
    TensorView view;
    view.dtype = t.dtype;
    view.shape = std::move(t.shape);
    view.data = data + t.offset;
    tensor_types_[t.name] = t.type_id;
    if (reinterpret_cast<uintptr_t>(view.data) % element_alignment(view.dtype) == 0) {
      tensors_.add(std::move(t.name), std::move(view));
    } else {
      tensors_.add_copy(std::move(t.name), view);
    }
  }
  tensors_.keep_alive(file);
  return Status();
}

// ---- lookups ----

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = values_.find(key);
  return it == values_.end() ? nullptr : &it->second;
}

std::vector<std::string> GgufFile::keys() const { return key_order_; }

const uint32_t* GgufFile::tensor_type_id(const std::string& name) const {
  auto it = tensor_types_.find(name);
  return it == tensor_types_.end() ? nullptr : &it->second;
}

Result<const GgufValue*> GgufFile::get_value(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return not_found(path_ + ": metadata key " + shown(key) + " not found");
  return v;
}

Status GgufFile::key_error(const std::string& key, const Status& status) const {
  return Status(status.code(), path_ + ": metadata key " + shown(key) + " " + status.message());
}

Result<std::string> GgufFile::get_string(const std::string& key) const {
  KV_ASSIGN_OR_RETURN(const GgufValue* v, get_value(key));
  Result<std::string> r = v->as_string();
  if (!r.ok()) return key_error(key, r.status());
  return r;
}

Result<int64_t> GgufFile::get_int(const std::string& key) const {
  KV_ASSIGN_OR_RETURN(const GgufValue* v, get_value(key));
  Result<int64_t> r = v->as_int();
  if (!r.ok()) return key_error(key, r.status());
  return r;
}

Result<uint64_t> GgufFile::get_uint(const std::string& key) const {
  KV_ASSIGN_OR_RETURN(const GgufValue* v, get_value(key));
  Result<uint64_t> r = v->as_uint();
  if (!r.ok()) return key_error(key, r.status());
  return r;
}

Result<double> GgufFile::get_float(const std::string& key) const {
  KV_ASSIGN_OR_RETURN(const GgufValue* v, get_value(key));
  Result<double> r = v->as_float();
  if (!r.ok()) return key_error(key, r.status());
  return r;
}

Result<bool> GgufFile::get_bool(const std::string& key) const {
  KV_ASSIGN_OR_RETURN(const GgufValue* v, get_value(key));
  Result<bool> r = v->as_bool();
  if (!r.ok()) return key_error(key, r.status());
  return r;
}

Result<std::vector<std::string>> GgufFile::get_string_array(const std::string& key) const {
  KV_ASSIGN_OR_RETURN(const GgufValue* v, get_value(key));
  if (!v->is_array() || v->array_type() != GgufType::kString) {
    return key_error(key, invalid_argument("is " + describe_type(*v) + ", not an ARRAY of STRING"));
  }
  return v->strings();
}

Result<std::vector<float>> GgufFile::get_float_array(const std::string& key) const {
  KV_ASSIGN_OR_RETURN(const GgufValue* v, get_value(key));
  const GgufType et = v->array_type();
  if (!v->is_array() ||
      !(et == GgufType::kFloat32 || et == GgufType::kFloat64 || GgufValue::is_integer_type(et))) {
    return key_error(key, invalid_argument("is " + describe_type(*v) + ", not an array of numbers"));
  }
  std::vector<float> out(v->array_size());
  if (et == GgufType::kFloat32) {
    if (!out.empty()) std::memcpy(out.data(), v->packed().data(), out.size() * sizeof(float));
    return out;
  }
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(*v->at(i).as_float());
  return out;
}

Result<std::vector<int32_t>> GgufFile::get_int_array(const std::string& key) const {
  KV_ASSIGN_OR_RETURN(const GgufValue* v, get_value(key));
  const GgufType et = v->array_type();
  if (!v->is_array() || !GgufValue::is_integer_type(et)) {
    return key_error(key, invalid_argument("is " + describe_type(*v) + ", not an array of integers"));
  }
  std::vector<int32_t> out(v->array_size());
  if (et == GgufType::kInt32) {
    if (!out.empty()) std::memcpy(out.data(), v->packed().data(), out.size() * sizeof(int32_t));
    return out;
  }
  for (size_t i = 0; i < out.size(); ++i) {
    const GgufValue item = v->at(i);
    Result<int64_t> x = item.as_int();
    if (!x.ok() || *x < std::numeric_limits<int32_t>::min() || *x > std::numeric_limits<int32_t>::max()) {
      return key_error(key, out_of_range("element " + std::to_string(i) + " is " + item.to_string() +
                                         ", which does not fit in int32"));
    }
    out[i] = static_cast<int32_t>(*x);
  }
  return out;
}

}  // namespace kvshare
