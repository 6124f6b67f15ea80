// GGUF (llama.cpp's model format), versions 2 and 3, little-endian:
//   "GGUF", u32 version, u64 tensor count, u64 metadata count,
//   metadata: {string key, u32 value type, value}...,
//   tensor infos: {string name, u32 n_dims, u64 ne[n_dims] (innermost first), u32 ggml type, u64 offset}...,
//   padding to `general.alignment` (default 32), tensor data (each offset a multiple of the alignment).
// Strings are a u64 byte length and the bytes; arrays a u32 element type, a u64 count and the elements.
//
// Tensors of type F32, F16, BF16 and Q8_0 are supported; any other type is an unimplemented error naming the
// tensor and its type. Every malformed file (bad magic, truncation anywhere, counts or string lengths that the
// file cannot hold, more than 4 dimensions, overflowing sizes, misaligned or overlapping offsets, tensor data
// past the end) is a Status naming the file and what is wrong; nothing is allocated from an unchecked count.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "core/mapped_file.h"
#include "core/status.h"
#include "formats/tensor_store.h"

namespace kvshare {

// Metadata value types; the numbers are the file's.
enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// "UINT32", "STRING", ...; "unknown" for a number outside the enum.
const char* gguf_type_name(GgufType type);

// The name of a ggml tensor type id ("Q4_K"), or "unknown".
const char* ggml_type_name(uint32_t type_id);

// The tensor type id a DType is written with (F32 0, F16 1, Q8_0 8, BF16 30).
uint32_t ggml_type_id(DType dtype);

constexpr uint32_t kGgufDefaultAlignment = 32;
constexpr int kGgufMaxDims = 4;            // GGML_MAX_DIMS
constexpr int kGgufMaxArrayNesting = 8;    // deeper arrays of arrays are rejected as corrupt

// One metadata value: a scalar of any GGUF type, a string, or an array (of one element type, possibly nested).
// Integers are held as 64 bits and floats as double; type() keeps the type they were stored with. Arrays are
// compact: scalar elements stay packed as in the file, strings in one vector<string>; at(i) decodes an element.
class GgufValue {
 public:
  GgufValue() = default;  // UINT8 0

  // Preconditions: `type` is an unsigned (make_uint), signed (make_int) or float (make_float) type, and the
  // value fits it.
  static GgufValue make_uint(GgufType type, uint64_t v);
  static GgufValue make_int(GgufType type, int64_t v);
  static GgufValue make_float(GgufType type, double v);
  static GgufValue make_bool(bool v);
  static GgufValue make_string(std::string v);
  static GgufValue make_string_array(std::vector<std::string> items);
  // `count` elements of the scalar (not STRING or ARRAY) type `element_type`, packed little-endian at `data`
  // (a BOOL is one byte, 0 or 1). Precondition: `data` holds count * size of the element type bytes.
  static GgufValue make_scalar_array(GgufType element_type, const void* data, size_t count);
  // Any element type, including nested arrays. Precondition: every item has type `element_type`.
  static GgufValue make_array(GgufType element_type, const std::vector<GgufValue>& items);

  GgufType type() const { return type_; }
  bool is_integer() const { return is_integer_type(type_); }  // any of the 8 integer types (not BOOL)
  bool is_float() const { return type_ == GgufType::kFloat32 || type_ == GgufType::kFloat64; }
  bool is_bool() const { return type_ == GgufType::kBool; }
  bool is_string() const { return type_ == GgufType::kString; }
  bool is_array() const { return type_ == GgufType::kArray; }

  // invalid_argument when the type does not fit ("is STRING, not an integer"); the caller adds the key.
  Result<int64_t> as_int() const;     // any integer type; out_of_range for a UINT64 above INT64_MAX
  Result<uint64_t> as_uint() const;   // any integer type; out_of_range for a negative value
  Result<double> as_float() const;    // a float or any integer type
  Result<bool> as_bool() const;
  Result<std::string> as_string() const;
  // The string without a copy. Precondition: is_string().
  const std::string& string_ref() const { return std::get<std::string>(v_); }

  // Arrays (array_size() is 0 for a non-array). array_type() is the element type.
  GgufType array_type() const { return array_type_; }
  size_t array_size() const { return count_; }
  // Element i, decoded. Precondition: i < array_size().
  GgufValue at(size_t i) const;
  // The elements of a STRING array without copies; empty for any other value.
  const std::vector<std::string>& strings() const { return strings_; }
  // The packed little-endian elements of a scalar array; empty for any other value.
  const std::vector<uint8_t>& packed() const { return packed_; }

  // A short human-readable rendering: 64, 1e-05, "llama", [STRING x 512: "<unk>", "<s>", ...].
  std::string to_string() const;

  static bool is_integer_type(GgufType type);
  // Bytes per element of a scalar type (BOOL 1, FLOAT64 8); 0 for STRING, ARRAY and unknown numbers.
  static size_t scalar_size(GgufType type);

 private:
  GgufType type_ = GgufType::kUint8;
  std::variant<uint64_t, int64_t, double, bool, std::string> v_ = uint64_t{0};
  // Arrays: exactly one of these holds the elements, by element type.
  GgufType array_type_ = GgufType::kUint8;
  size_t count_ = 0;
  std::vector<uint8_t> packed_;       // scalar elements
  std::vector<std::string> strings_;  // STRING elements
  std::vector<GgufValue> items_;      // ARRAY elements
};

// A GGUF file opened for reading: metadata parsed into values, tensors as zero-copy views into the mapping.
// Movable; views in tensors() and values from find() stay valid while the GgufFile (or a moved-to one) lives.
class GgufFile {
 public:
  // Maps and validates `path`. Codes: not_found (no such file), data_loss (malformed), unimplemented
  // (GGUF v1, a big-endian file, or a tensor type other than F32/F16/BF16/Q8_0).
  static Result<GgufFile> open(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  // Where tensor data starts in the file (tensor offsets are relative to it).
  uint64_t data_offset() const { return data_offset_; }

  // The value under `key`, or nullptr.
  const GgufValue* find(const std::string& key) const;
  bool contains(const std::string& key) const { return find(key) != nullptr; }
  // Every key, in file order.
  std::vector<std::string> keys() const;

  // Typed getters: not_found when the key is absent, invalid_argument when the type does not fit (out_of_range
  // when the value does not), each message naming the file and the key.
  Result<std::string> get_string(const std::string& key) const;
  Result<int64_t> get_int(const std::string& key) const;      // any integer type
  Result<uint64_t> get_uint(const std::string& key) const;    // any integer type, non-negative
  Result<double> get_float(const std::string& key) const;     // a float or any integer type
  Result<bool> get_bool(const std::string& key) const;
  Result<std::vector<std::string>> get_string_array(const std::string& key) const;
  Result<std::vector<float>> get_float_array(const std::string& key) const;    // float or integer elements
  Result<std::vector<int32_t>> get_int_array(const std::string& key) const;    // integer elements that fit int32

  // Shapes are outermost-first: GGUF's ne[] reversed (token_embd.weight with ne {64, 512} has shape {512, 64}).
  const TensorStore& tensors() const { return tensors_; }
  // The ggml type id a tensor was stored with (as in the file), or nullptr.
  const uint32_t* tensor_type_id(const std::string& name) const;

 private:
  Status parse(const std::shared_ptr<MappedFile>& file);
  Result<const GgufValue*> get_value(const std::string& key) const;
  Status key_error(const std::string& key, const Status& status) const;

  std::string path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue> values_;
  std::vector<std::string> key_order_;
  TensorStore tensors_;
  std::map<std::string, uint32_t> tensor_types_;
};

// Builds a GGUF v3 file that llama.cpp (and GgufFile) loads. Setting a key again replaces its value and keeps
// its place. Tensor data is aligned to `general.alignment`: 32 unless set_u32("general.alignment", n) with n a
// power of two. Tensor views are not copied: their data must stay valid until write() returns.
class GgufWriter {
 public:
  void set_value(const std::string& key, GgufValue value);
  void set_string(const std::string& key, std::string value);
  void set_u32(const std::string& key, uint32_t value);
  void set_i32(const std::string& key, int32_t value);
  void set_u64(const std::string& key, uint64_t value);
  void set_i64(const std::string& key, int64_t value);
  void set_f32(const std::string& key, float value);
  void set_f64(const std::string& key, double value);
  void set_bool(const std::string& key, bool value);
  void set_string_array(const std::string& key, std::vector<std::string> values);
  void set_f32_array(const std::string& key, const std::vector<float>& values);
  void set_i32_array(const std::string& key, const std::vector<int32_t>& values);

  // `view.shape` is outermost-first (written as ne[] reversed; a scalar is written as ne {1}); at most 4 dims.
  // Any DType may be written; a Q8_0 tensor's innermost dimension must be a multiple of 32.
  void add_tensor(std::string name, TensorView view);

  // invalid_argument for a duplicate or empty tensor name, a bad shape or a bad general.alignment; the file is
  // written to "<path>.tmp" and renamed onto `path`.
  Status write(const std::string& path) const;

 private:
  std::vector<std::pair<std::string, GgufValue>> values_;
  std::vector<NamedTensor> tensors_;
};

}  // namespace kvshare
