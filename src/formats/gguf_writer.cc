// GgufWriter: the GGUF v3 layout llama.cpp's loader expects (tensor offsets in order, each tensor's data padded
// to the alignment, names shorter than 64 bytes, at most 4 dimensions, general.alignment a UINT32).
#include <set>

#include "formats/gguf.h"
#include "formats/io_util.h"

namespace kvshare {

namespace {

using formats_internal::checked_align_up;
using formats_internal::checked_tensor_size;
using formats_internal::FileWriter;
using formats_internal::TensorSize;

constexpr size_t kMaxTensorNameBytes = 63;  // llama.cpp's GGML_MAX_NAME is 64 with the terminating NUL
constexpr uint32_t kWrittenVersion = 3;

void write_string(FileWriter& w, const std::string& s) {
  w.write_le<uint64_t>(s.size());
  w.write(s.data(), s.size());
}

// A value without its type tag (the caller writes that).
void write_value(FileWriter& w, const GgufValue& v) {
  switch (v.type()) {
    case GgufType::kUint8: w.write_le<uint8_t>(static_cast<uint8_t>(*v.as_uint())); return;
    case GgufType::kInt8: w.write_le<int8_t>(static_cast<int8_t>(*v.as_int())); return;
    case GgufType::kUint16: w.write_le<uint16_t>(static_cast<uint16_t>(*v.as_uint())); return;
    case GgufType::kInt16: w.write_le<int16_t>(static_cast<int16_t>(*v.as_int())); return;
    case GgufType::kUint32: w.write_le<uint32_t>(static_cast<uint32_t>(*v.as_uint())); return;
    case GgufType::kInt32: w.write_le<int32_t>(static_cast<int32_t>(*v.as_int())); return;
    case GgufType::kFloat32: w.write_le<float>(static_cast<float>(*v.as_float())); return;
    case GgufType::kBool: w.write_le<uint8_t>(*v.as_bool() ? 1 : 0); return;
    case GgufType::kUint64: w.write_le<uint64_t>(*v.as_uint()); return;
    case GgufType::kInt64: w.write_le<int64_t>(*v.as_int()); return;
    case GgufType::kFloat64: w.write_le<double>(*v.as_float()); return;
    case GgufType::kString: write_string(w, v.string_ref()); return;
    case GgufType::kArray: break;
  }
  w.write_le<uint32_t>(static_cast<uint32_t>(v.array_type()));
  w.write_le<uint64_t>(v.array_size());
  if (v.array_type() == GgufType::kString) {
    for (const std::string& s : v.strings()) write_string(w, s);
  } else if (v.array_type() == GgufType::kArray) {
    for (size_t i = 0; i < v.array_size(); ++i) write_value(w, v.at(i));
  } else {
    w.write(v.packed().data(), v.packed().size());
  }
}

}  // namespace

void GgufWriter::set_value(const std::string& key, GgufValue value) {
  for (auto& [k, v] : values_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  values_.emplace_back(key, std::move(value));
}

void GgufWriter::set_string(const std::string& key, std::string value) {
  set_value(key, GgufValue::make_string(std::move(value)));
}
void GgufWriter::set_u32(const std::string& key, uint32_t value) {
  set_value(key, GgufValue::make_uint(GgufType::kUint32, value));
}
void GgufWriter::set_i32(const std::string& key, int32_t value) {
  set_value(key, GgufValue::make_int(GgufType::kInt32, value));
}
void GgufWriter::set_u64(const std::string& key, uint64_t value) {
  set_value(key, GgufValue::make_uint(GgufType::kUint64, value));
}
void GgufWriter::set_i64(const std::string& key, int64_t value) {
  set_value(key, GgufValue::make_int(GgufType::kInt64, value));
}
void GgufWriter::set_f32(const std::string& key, float value) {
  set_value(key, GgufValue::make_float(GgufType::kFloat32, value));
}
void GgufWriter::set_f64(const std::string& key, double value) {
  set_value(key, GgufValue::make_float(GgufType::kFloat64, value));
}
void GgufWriter::set_bool(const std::string& key, bool value) { set_value(key, GgufValue::make_bool(value)); }
void GgufWriter::set_string_array(const std::string& key, std::vector<std::string> values) {
  set_value(key, GgufValue::make_string_array(std::move(values)));
}
void GgufWriter::set_f32_array(const std::string& key, const std::vector<float>& values) {
  set_value(key, GgufValue::make_scalar_array(GgufType::kFloat32, values.data(), values.size()));
}
void GgufWriter::set_i32_array(const std::string& key, const std::vector<int32_t>& values) {
  set_value(key, GgufValue::make_scalar_array(GgufType::kInt32, values.data(), values.size()));
}

void GgufWriter::add_tensor(std::string name, TensorView view) {
  tensors_.push_back(NamedTensor{std::move(name), std::move(view)});
}

Status GgufWriter::write(const std::string& path) const {
  uint64_t alignment = kGgufDefaultAlignment;
  std::set<std::string> keys;
  for (const auto& [key, value] : values_) {
    if (!keys.insert(key).second) return internal_error(path + ": metadata key " + key + " stored twice");
    if (key == "general.alignment") {
      if (value.type() != GgufType::kUint32) {
        return invalid_argument(path + ": general.alignment must be UINT32, not " + gguf_type_name(value.type()));
      }
      alignment = *value.as_uint();
      if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
        return invalid_argument(path + ": general.alignment " + std::to_string(alignment) + " is not a power of two");
      }
    }
  }

  std::set<std::string> names;
  std::vector<uint64_t> bytes(tensors_.size());
  std::vector<uint64_t> offsets(tensors_.size());
  uint64_t data_size = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const NamedTensor& t = tensors_[i];
    const std::string context = path + ": tensor '" + t.name + "'";
    if (t.name.empty()) return invalid_argument(path + ": a tensor has an empty name");
    if (t.name.size() > kMaxTensorNameBytes) {
      return invalid_argument(context + ": the name is longer than " + std::to_string(kMaxTensorNameBytes) +
                              " bytes, which llama.cpp rejects");
    }
    if (!names.insert(t.name).second) return invalid_argument(context + " is added twice");
    if (t.view.shape.size() > static_cast<size_t>(kGgufMaxDims)) {
      return invalid_argument(context + " has " + std::to_string(t.view.shape.size()) + " dimensions; GGUF allows " +
                              std::to_string(kGgufMaxDims));
    }
    Result<TensorSize> size = checked_tensor_size(t.view.dtype, t.view.shape);
    if (!size.ok()) return invalid_argument(context + ": " + size.status().message());
    bytes[i] = size->num_bytes;
    if (bytes[i] != 0 && t.view.data == nullptr) return invalid_argument(context + " has no data");
    offsets[i] = data_size;
    uint64_t padded;
    if (!checked_align_up(bytes[i], alignment, &padded) || padded > UINT64_MAX - data_size) {
      return invalid_argument(context + " is too large");
    }
    data_size += padded;
  }

  FileWriter w(path);
  w.write("GGUF", 4);
  w.write_le<uint32_t>(kWrittenVersion);
  w.write_le<uint64_t>(tensors_.size());
  w.write_le<uint64_t>(values_.size());
  for (const auto& [key, value] : values_) {
    write_string(w, key);
    w.write_le<uint32_t>(static_cast<uint32_t>(value.type()));
    write_value(w, value);
  }
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const NamedTensor& t = tensors_[i];
    write_string(w, t.name);
    if (t.view.shape.empty()) {
      w.write_le<uint32_t>(1);
      w.write_le<uint64_t>(1);
    } else {
      w.write_le<uint32_t>(static_cast<uint32_t>(t.view.shape.size()));
      for (auto d = t.view.shape.rbegin(); d != t.view.shape.rend(); ++d) w.write_le<uint64_t>(static_cast<uint64_t>(*d));
    }
    w.write_le<uint32_t>(ggml_type_id(t.view.dtype));
    w.write_le<uint64_t>(offsets[i]);
  }
  uint64_t data_start = 0;
  checked_align_up(w.bytes_written(), alignment, &data_start);
  w.write_zeros(data_start - w.bytes_written());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    w.write(tensors_[i].view.data, bytes[i]);
    uint64_t padded = 0;
    checked_align_up(bytes[i], alignment, &padded);
    w.write_zeros(padded - bytes[i]);
  }
  return w.finish();
}

}  // namespace kvshare
