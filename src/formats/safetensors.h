// safetensors: an 8-byte little-endian header length N, N bytes of JSON
// ({"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {string: string}}),
// then the tensors' bytes (offsets are relative to the end of the header).
//
// Supported dtypes: F32, F16, BF16. Any other dtype is an unimplemented error naming the tensor and dtype.
// Every malformed file (truncated, a header past the end, invalid JSON, duplicate keys, offsets out of range,
// overlapping, or not matching dtype x shape, negative or overflowing dimensions, an unknown dtype) is a Status
// naming the file and the problem; nothing is allocated from an unchecked size.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "formats/tensor_store.h"

namespace kvshare {

// The largest JSON header accepted (the limit the safetensors reference implementation sets).
constexpr uint64_t kSafetensorsMaxHeaderBytes = 100ull << 20;

// Maps one file and returns zero-copy views into it; the store keeps the mapping alive. A tensor whose bytes are
// not aligned to its element size in the file (possible only with a header that is not padded as the reference
// writer pads it) is copied into an aligned buffer instead, so every view's data is aligned to its element size.
//
// "__metadata__" becomes TensorStore::metadata(). An entry there whose key is not a tensor name and whose value
// is one (the way safetensors' save_model records a tied tensor it dropped, e.g.
// "model.embed_tokens.weight": "lm_head.weight") adds the key as a second name for that tensor.
//
// Codes: not_found (no such file), data_loss (truncated or corrupted), unimplemented (an unsupported dtype).
Result<TensorStore> load_safetensors(const std::string& path);

// A Hugging Face model folder: "model.safetensors.index.json" (its "weight_map" names each tensor's shard file,
// which must sit in `dir`) with its shards, or else "model.safetensors". Every shard named by the index must
// exist (not_found otherwise) and hold the tensors the index places in it (data_loss otherwise); a tensor in two
// shards is data_loss. Tied-tensor aliases may point across shards.
Result<TensorStore> load_safetensors_dir(const std::string& dir);

// Writes `tensors` (F32, F16 or BF16; unimplemented otherwise) and `metadata` as a safetensors file that the
// reference implementation reads: header padded with spaces to a multiple of 8 bytes, tensors packed without
// gaps, largest element size first then by name, so every tensor is aligned to its element size.
// Preconditions: every view's data holds num_bytes() bytes. Names must be unique, non-empty and not
// "__metadata__" (invalid_argument otherwise). The file is written to "<path>.tmp" and renamed onto `path`.
Status write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace kvshare
