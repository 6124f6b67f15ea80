// make_model: writes a model with generated weights, for tests and benchmarks where no real checkpoint can be had.
//
// One call writes the same network twice, as a Hugging Face folder and as a GGUF file beside it:
//   out_dir/config.json, generation_config.json      as transformers writes them
//   out_dir/model.safetensors                         Hugging Face names and layouts, every tensor in `dtype`
//   out_dir/vocab.json, merges.txt                    the tokenizer, GPT-2 style (always)
//   out_dir/tokenizer.json                            a copy, when the source folder has one
//   out_dir/tokenizer_config.json                     a copy of the source's, or one written for the vocabulary
//   out_dir/model.gguf                                GGUF v3 as llama.cpp's convert_hf_to_gguf.py lays it out:
//                                                     the same weights plus the vocabulary (tokenizer.ggml.*)
//
// Weights are a pure function of (seed, tensor name, shape): every Hugging Face tensor draws from its own
// SplitMix64 stream (Steele, Lea & Flood 2014; constants below in make_model.cc), seeded with
//   state = splitmix64_mix(seed ^ splitmix64_mix(fnv1a64(name)))
// Each draw x = next() gives u = (x >> 40) / 2^24 in [0, 1) (exact in float) and the value
// (float)(b * (2u - 1)) computed in double, so the values are bit-identical on every machine and standard library:
//   2-D matrices (linear layers, lm_head)   b = sqrt(3 / fan_in)   (unit-variance outputs for unit-variance inputs)
//   embeddings (tokens, GPT-2 positions)    b = 1
//   norm weights                            1 + uniform[-0.1, 0.1]
//   norm and linear biases                  uniform[-0.1, 0.1]
// Values are generated in float32 row-major over the Hugging Face shape and then rounded to `dtype`.
// The GGUF file holds those same rounded values: 2-D matrices in `dtype`, 1-D tensors in F32 (as llama.cpp stores
// them), GPT-2's Conv1D [in, out] matrices transposed to [out, in], and Llama's Q and K rows (and biases) permuted
// into llama.cpp's interleaved RoPE order (per head: new row 2i = row i, new row 2i+1 = row i + head_dim / 2).
//
// Architectures and shapes (vocab size always = the tokenizer's):
//   gpt2:  "micro"       n_embd 16, 1 layer, 2 heads, n_positions 64, n_inner 32 (the fuzzers' seed models)
//          "tiny"        n_embd 64, 2 layers, 4 heads, n_positions 512, n_inner 256
//          "gpt2-small"  n_embd 768, 12 layers, 12 heads, n_positions 2048 (GPT-2 has 1024: the benchmark workloads need 1024+64+32), n_inner 3072
//   llama, qwen2 (qwen2 = Llama with q/k/v biases, model_type "qwen2"):
//          "micro"        hidden 16, 1 layer, 2 heads, 1 KV head, ffn 32, 64 positions, untied (the fuzzers' seeds)
//          "tiny"         hidden 64, 2 layers, 4 heads, 2 KV heads, ffn 192, 512 positions, rope_theta 1e4,
//                         untied lm_head for llama (so that path is exercised), tied for qwen2
//          "tiny-llama3"  as tiny, tied, rope_theta 5e5 and llama3 rope_scaling (factor 8, low 1, high 4,
//                         original_max_position_embeddings 64: the scaling matters within 512 positions)
//          "smollm-135m"  hidden 576, 30 layers, 9 heads, 3 KV heads, ffn 1536, 2048 positions, tied, theta 1e4
//          "llama-1b"     Llama-3.2-1B: hidden 2048, 16 layers, 32 heads, 8 KV heads, ffn 8192, 8192 positions,
//                         tied, rope_theta 5e5, llama3 rope_scaling factor 32, original 8192
// All Llama shapes use rms_norm_eps 1e-5; GPT-2 layer_norm_epsilon 1e-5.
//
// GGUF notes:
//  - gpt2 and llama use general.architecture "gpt2" / "llama". qwen2 models use "qwen2", as llama.cpp does; then,
//    also as llama.cpp does, Q/K are NOT permuted (llama.cpp runs qwen2 with NEOX-style RoPE), and llama3 rope
//    scaling cannot be expressed (llama.cpp's qwen2 reads no rope_freqs), so a qwen2 "tiny-llama3"/"llama-1b"
//    GGUF runs without it. kvshare reads all three (qwen2 with half-style RoPE, as stored).
//  - llama3 rope scaling is written as llama.cpp's convert does: a `rope_freqs.weight` F32 tensor of head_dim / 2
//    per-dimension frequency divisors (1 for short wavelengths, `factor` for long, smooth between).
//  - The tokenizer folder is read by the engine's own reader (tokenizer/tokenizer_files.h), so the GGUF holds the
//    vocabulary kvshare reads from the folder. tokenizer.ggml.model is "gpt2"; tokenizer.ggml.pre is the GGUF name
//    whose regexes are exactly the folder's pre-tokenizer ("gpt-2", "llama-bpe" or "qwen2"; any other is refused);
//    tokens are padded to the vocab size with "[PAD<i>]" (type UNUSED) where ids are missing; added tokens are
//    CONTROL when special (or spelled <|...|>, as llama.cpp's converter has it), else USER_DEFINED;
//    add_bos_token and add_eos_token are always written.
//
// BOS/EOS: as the tokenizer reads them (tokenizer_config.json's bos_token/eos_token, else the tokenizer.json
// post-processor's), else "<|endoftext|>" for both when the vocabulary has it (GPT-2); otherwise none (null).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace kvshare {

struct MakeModelOptions {
  std::string arch;           // "gpt2", "llama" or "qwen2"
  std::string shape;          // one of model_shape_names(arch)
  std::string tokenizer_dir;  // vocab.json + merges.txt, encoder.json + vocab.bpe, or a byte-level BPE tokenizer.json
  std::string out_dir;        // created if missing; files already there with the same names are replaced
  std::string dtype = "f32";  // f32 | f16 | bf16: stored dtype of the 2-D matrices (all tensors in safetensors)
  uint64_t seed = 0;
};

// The architectures make_model knows: {"gpt2", "llama", "qwen2"}.
std::vector<std::string> model_arch_names();
// The shapes of `arch`, smallest first; empty for an unknown arch.
std::vector<std::string> model_shape_names(const std::string& arch);

// Writes the model described above. Errors (nothing large is written before options and tokenizer are checked):
//   invalid_argument  unknown arch, shape or dtype (the message lists the valid choices), an empty out_dir,
//                     a malformed tokenizer file
//   not_found         tokenizer_dir missing or holding none of the accepted file sets (the message lists them)
//   unimplemented     a tokenizer that is not byte-level BPE, or whose pre-tokenizer has no GGUF name
//   (and any error BpeTokenizer::from_hf_dir gives for the tokenizer folder, or ChatTemplate for its template)
//   other codes       out_dir cannot be created or written (the message names the path and the reason)
Status make_model(const MakeModelOptions& options);

}  // namespace kvshare
