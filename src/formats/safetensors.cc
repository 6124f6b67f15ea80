#include "formats/safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "formats/io_util.h"
#include "formats/json_builder.h"

namespace kvshare {

namespace {

using formats_internal::ByteReader;
using formats_internal::checked_tensor_size;
using formats_internal::element_alignment;
using formats_internal::FileWriter;
using formats_internal::TensorSize;
using json = nlohmann::json;

constexpr const char* kMetadataKey = "__metadata__";
constexpr const char* kIndexFile = "model.safetensors.index.json";
constexpr const char* kSingleFile = "model.safetensors";

// A string from the file, shortened for an error message.
std::string shown(const std::string& s) {
  constexpr size_t kMax = 80;
  return "'" + (s.size() <= kMax ? s : s.substr(0, kMax) + "...") + "'";
}

Result<DType> parse_dtype(const std::string& s, const std::string& tensor) {
  if (s == "F32") return DType::kF32;
  if (s == "F16") return DType::kF16;
  if (s == "BF16") return DType::kBF16;
  static const char* const kOtherSpecDtypes[] = {"BOOL", "U8",  "I8",  "I16", "U16", "I32", "U32", "I64", "U64", "F64",
                                                 "C64",  "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"};
  for (const char* known : kOtherSpecDtypes) {
    if (s == known) {
      return unimplemented("tensor " + shown(tensor) + " has dtype " + s +
                           ", which kvshare does not support (supported: F32, F16, BF16)");
    }
  }
  return data_loss("tensor " + shown(tensor) + " has unknown dtype " + shown(s));
}

std::string offsets_string(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

// Parses JSON text, reporting duplicate object keys (which nlohmann would silently collapse) as errors, in
// time linear in the text (json_builder.h).
Result<json> parse_json_strict(std::string_view text) {
  JsonBuilder builder(/*reject_duplicate_keys=*/true);
  KV_RETURN_IF_ERROR(run_json_builder(text, builder));
  return std::move(builder.result());
}

Result<std::vector<int64_t>> parse_shape(const json& shape, const std::string& tensor) {
  if (!shape.is_array()) return data_loss("tensor " + shown(tensor) + ": \"shape\" is missing or not an array");
  std::vector<int64_t> dims;
  dims.reserve(shape.size());
  for (const json& d : shape) {
    if (d.is_number_unsigned()) {
      const uint64_t v = d.get<uint64_t>();
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return data_loss("tensor " + shown(tensor) + ": dimension " + std::to_string(v) + " is too large");
      }
      dims.push_back(static_cast<int64_t>(v));
    } else if (d.is_number_integer()) {
      return data_loss("tensor " + shown(tensor) + ": negative dimension " + std::to_string(d.get<int64_t>()));
    } else {
      return data_loss("tensor " + shown(tensor) + ": \"shape\" holds " + d.dump() + ", not a non-negative integer");
    }
  }
  return dims;
}

struct Entry {
  std::string name;
  TensorView view;
  uint64_t begin = 0;
  uint64_t end = 0;
};

Result<Entry> parse_entry(const std::string& name, const json& value, uint64_t data_size) {
  if (!value.is_object()) return data_loss("header entry " + shown(name) + " is not an object");
  Entry e;
  e.name = name;
  auto dtype = value.find("dtype");
  if (dtype == value.end() || !dtype->is_string()) {
    return data_loss("tensor " + shown(name) + ": \"dtype\" is missing or not a string");
  }
  KV_ASSIGN_OR_RETURN(e.view.dtype, parse_dtype(dtype->get<std::string>(), name));
  auto shape = value.find("shape");
  KV_ASSIGN_OR_RETURN(e.view.shape, parse_shape(shape == value.end() ? json() : *shape, name));
  auto offsets = value.find("data_offsets");
  if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
      !(*offsets)[1].is_number_unsigned()) {
    return data_loss("tensor " + shown(name) + ": \"data_offsets\" is missing or not two non-negative integers");
  }
  e.begin = (*offsets)[0].get<uint64_t>();
  e.end = (*offsets)[1].get<uint64_t>();
  Result<TensorSize> size = checked_tensor_size(e.view.dtype, e.view.shape);
  if (!size.ok()) return size.status().with_context("tensor " + shown(name));
  if (e.end < e.begin) {
    return data_loss("tensor " + shown(name) + ": data_offsets " + offsets_string(e.begin, e.end) + " are reversed");
  }
  if (e.end > data_size) {
    return data_loss("tensor " + shown(name) + ": data_offsets " + offsets_string(e.begin, e.end) +
                     " run past the end of the data section (" + std::to_string(data_size) + " bytes)");
  }
  if (e.end - e.begin != size->num_bytes) {
    return data_loss("tensor " + shown(name) + ": data_offsets " + offsets_string(e.begin, e.end) + " hold " +
                     std::to_string(e.end - e.begin) + " bytes, but " + dtype_name(e.view.dtype) + " x " +
                     shape_to_string(e.view.shape) + " needs " + std::to_string(size->num_bytes));
  }
  return e;
}

// Parses one mapped safetensors file into a store. Messages do not name the file; the caller adds it.
Result<TensorStore> parse_safetensors(const std::shared_ptr<MappedFile>& file) {
  ByteReader reader(file->data(), file->size());
  KV_ASSIGN_OR_RETURN(const uint64_t header_len, reader.read<uint64_t>("the 8-byte header length"));
  if (header_len > reader.remaining()) {
    return data_loss("the header length " + std::to_string(header_len) + " runs past the end of the file (" +
                     std::to_string(file->size()) + " bytes)");
  }
  if (header_len > kSafetensorsMaxHeaderBytes) {
    return data_loss("the header length " + std::to_string(header_len) + " exceeds the limit of " +
                     std::to_string(kSafetensorsMaxHeaderBytes) + " bytes");
  }
  KV_ASSIGN_OR_RETURN(const std::string_view header_text, reader.read_bytes(header_len, "the header"));
  Result<json> parsed = parse_json_strict(header_text);
  if (!parsed.ok()) return parsed.status().with_context("header");
  const json& header = *parsed;
  if (!header.is_object()) return data_loss("the header is not a JSON object");

  const uint8_t* data = reader.current();
  const uint64_t data_size = reader.remaining();
  TensorStore store;
  std::vector<Entry> entries;
  entries.reserve(header.size());
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      if (!value.is_object()) return data_loss("\"__metadata__\" is not an object");
      for (const auto& [mkey, mvalue] : value.items()) {
        if (!mvalue.is_string()) return data_loss("\"__metadata__\" entry " + shown(mkey) + " is not a string");
        store.set_metadata(mkey, mvalue.get<std::string>());
      }
      continue;
    }
    KV_ASSIGN_OR_RETURN(Entry e, parse_entry(key, value, data_size));
    entries.push_back(std::move(e));
  }

  // Tensors may not share bytes. (Gaps are tolerated: they are harmless to a reader.)
  std::vector<const Entry*> by_offset;
  for (const Entry& e : entries) {
    if (e.end > e.begin) by_offset.push_back(&e);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const Entry& prev = *by_offset[i - 1];
    const Entry& cur = *by_offset[i];
    if (cur.begin < prev.end) {
      return data_loss("tensors " + shown(prev.name) + " " + offsets_string(prev.begin, prev.end) + " and " +
                       shown(cur.name) + " " + offsets_string(cur.begin, cur.end) + " overlap");
    }
  }

  for (Entry& e : entries) {
    e.view.data = data + e.begin;
    if (reinterpret_cast<uintptr_t>(e.view.data) % element_alignment(e.view.dtype) == 0) {
      store.add(std::move(e.name), std::move(e.view));
    } else {
      store.add_copy(std::move(e.name), e.view);
    }
  }
  store.keep_alive(file);
  return store;
}

Result<TensorStore> load_one(const std::string& path) {
  KV_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
  Result<TensorStore> store = parse_safetensors(file);
  if (!store.ok()) return store.status().with_context(path);
  return store;
}

// Adds the tied-tensor aliases recorded in the metadata (see load_safetensors).
void resolve_aliases(TensorStore& store) {
  for (const auto& [key, value] : store.metadata()) {
    if (store.contains(key)) continue;
    const TensorView* target = store.find(value);
    if (target != nullptr) store.add(key, *target);
  }
}

// For a `path` that names an entry but not a file (file_exists false, path_entry_exists true): a symbolic link
// that leads nowhere or loops. Saying the file is missing would send the user looking for the wrong problem.
Status broken_link(const std::string& path) {
  struct stat st {};
  const int err = ::stat(path.c_str(), &st) == 0 ? 0 : errno;
  return not_found(path + " is a symbolic link that cannot be followed (" + std::strerror(err) + ")");
}

bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

Result<TensorStore> load_sharded(const std::string& dir, const std::string& index_path) {
  KV_ASSIGN_OR_RETURN(const std::string text, read_model_text_file(index_path));
  Result<json> parsed = parse_json_strict(text);
  if (!parsed.ok()) return parsed.status().with_context(index_path);
  const json& index = *parsed;
  auto weight_map = index.is_object() ? index.find("weight_map") : index.end();
  if (!index.is_object() || weight_map == index.end() || !weight_map->is_object()) {
    return data_loss(index_path + ": no \"weight_map\" object");
  }
  std::map<std::string, std::string> shard_of;  // tensor -> shard file, as the index says
  std::set<std::string> shards;
  for (const auto& [name, shard] : weight_map->items()) {
    if (!shard.is_string() || !is_plain_file_name(shard.get<std::string>())) {
      return data_loss(index_path + ": weight_map entry " + shown(name) + " is " + shard.dump() +
                       ", not the name of a file in " + dir);
    }
    shard_of[name] = shard.get<std::string>();
    shards.insert(shard.get<std::string>());
  }
  if (shards.empty()) return data_loss(index_path + ": \"weight_map\" is empty");
  for (const std::string& shard : shards) {
    if (!file_exists(dir + "/" + shard)) {
      if (path_entry_exists(dir + "/" + shard)) return broken_link(dir + "/" + shard);
      return not_found(index_path + " names the shard " + shard + ", but " + dir + "/" + shard + " is missing");
    }
  }

  TensorStore merged;
  std::map<std::string, std::string> found_in;  // tensor -> shard it was read from
  for (const std::string& shard : shards) {
    const std::string path = dir + "/" + shard;
    KV_ASSIGN_OR_RETURN(TensorStore store, load_one(path));
    for (const auto& [name, view] : store.tensors()) {
      auto [it, inserted] = found_in.emplace(name, shard);
      if (!inserted) return data_loss(path + ": tensor " + shown(name) + " is also in the shard " + it->second);
    }
    merged.merge(std::move(store));
  }
  resolve_aliases(merged);
  for (const auto& [name, shard] : shard_of) {
    auto it = found_in.find(name);
    if (it != found_in.end() && it->second != shard) {
      return data_loss(index_path + ": weight_map places " + shown(name) + " in " + shard + ", but it is in " +
                       it->second);
    }
    if (!merged.contains(name)) {
      return data_loss(index_path + ": weight_map places " + shown(name) + " in " + shard +
                       ", but that shard does not hold it");
    }
  }
  return merged;
}

}  // namespace

Result<TensorStore> load_safetensors(const std::string& path) {
  KV_ASSIGN_OR_RETURN(TensorStore store, load_one(path));
  resolve_aliases(store);
  return store;
}

Result<TensorStore> load_safetensors_dir(const std::string& dir) {
  if (!file_exists(dir)) return not_found("model folder " + dir + " does not exist");
  const std::string index_path = dir + "/" + kIndexFile;
  if (file_exists(index_path)) return load_sharded(dir, index_path);
  if (path_entry_exists(index_path)) return broken_link(index_path);
  const std::string single_path = dir + "/" + kSingleFile;
  if (file_exists(single_path)) return load_safetensors(single_path);
  if (path_entry_exists(single_path)) return broken_link(single_path);
  return not_found(dir + " holds neither " + kSingleFile + " nor " + kIndexFile);
}

Status write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  std::set<std::string> seen;
  std::vector<uint64_t> bytes(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const NamedTensor& t = tensors[i];
    if (t.name.empty() || t.name == kMetadataKey) {
      return invalid_argument(path + ": cannot write a tensor named " + shown(t.name));
    }
    if (!seen.insert(t.name).second) return invalid_argument(path + ": tensor " + shown(t.name) + " appears twice");
    if (t.view.dtype != DType::kF32 && t.view.dtype != DType::kF16 && t.view.dtype != DType::kBF16) {
      return unimplemented(path + ": tensor " + shown(t.name) + " is " + dtype_name(t.view.dtype) +
                           "; safetensors is written only with F32, F16 or BF16");
    }
    Result<TensorSize> size = checked_tensor_size(t.view.dtype, t.view.shape);
    if (!size.ok()) return invalid_argument(path + ": tensor " + shown(t.name) + ": " + size.status().message());
    bytes[i] = size->num_bytes;
    if (bytes[i] != 0 && t.view.data == nullptr) {
      return invalid_argument(path + ": tensor " + shown(t.name) + " has no data");
    }
  }

  // Largest element first keeps every tensor aligned to its element size; ties by name for a stable file.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const size_t ea = element_alignment(tensors[a].view.dtype), eb = element_alignment(tensors[b].view.dtype);
    return ea != eb ? ea > eb : tensors[a].name < tensors[b].name;
  });

  json header = json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  uint64_t offset = 0;
  for (size_t i : order) {
    const NamedTensor& t = tensors[i];
    header[t.name] = {{"dtype", dtype_name(t.view.dtype)},
                      {"shape", t.view.shape},
                      {"data_offsets", {offset, offset + bytes[i]}}};
    offset += bytes[i];
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    return invalid_argument(path + ": a tensor name or metadata string is not valid UTF-8 (" + e.what() + ")");
  }
  while ((8 + text.size()) % 8 != 0) text += ' ';

  FileWriter out(path);
  out.write_le<uint64_t>(text.size());
  out.write(text.data(), text.size());
  for (size_t i : order) out.write(tensors[i].view.data, bytes[i]);
  return out.finish();
}

}  // namespace kvshare
