// Element-wise and row-wise kernels. Each works on rows independently with a fixed reduction order,
// so a row's result never depends on the other rows in the batch (batch invariance).
// The norms and GELU have plain references (namespace reference, in ops.cc) used as test oracles.
#pragma once

#include <cstdint>

namespace kvshare {

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight          x, out: [rows, dim]; may alias
void rms_norm(const float* x, const float* weight, float eps, int64_t rows, int64_t dim, float* out);
// out[r] = (x[r] - mean) / sqrt(var + eps) * weight + bias   (biased variance, as torch.nn.LayerNorm)
void layer_norm(const float* x, const float* weight, const float* bias, float eps, int64_t rows, int64_t dim,
                float* out);

enum class RopeStyle {
  kHalf,         // rotate_half: pairs (i, i + d/2), as Hugging Face Llama / GPT-NeoX
  kInterleaved,  // pairs (2i, 2i+1), as llama.cpp's GGUF Llama and llama2.c
};

// Rotates each head of x [tokens, num_heads, head_dim] in place. cos/sin: [tokens, rot_dim/2] per token,
// computed once per step (see rope_tables). rot_dim == head_dim here.
void apply_rope(float* x, int64_t tokens, int64_t num_heads, int64_t head_dim, const float* cos, const float* sin,
                RopeStyle style);
// cos/sin tables for `tokens` positions: angle = pos * inv_freq[i], i < head_dim/2.
void rope_tables(const int32_t* positions, int64_t tokens, const float* inv_freq, int64_t half_dim, float* cos,
                 float* sin);

// GPT-2's gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in place over [rows, cols].
void gelu_tanh(float* x, int64_t rows, int64_t cols);
// out = silu(gate) * up, element-wise over [rows, ffn]; out may alias gate.
void silu_mul(const float* gate, const float* up, int64_t rows, int64_t ffn, float* out);
// x += y
void add_inplace(float* x, const float* y, int64_t n);

// References (plain loops, double where it helps), for tests.
namespace reference {
void rms_norm(const float* x, const float* weight, float eps, int64_t rows, int64_t dim, float* out);
void layer_norm(const float* x, const float* weight, const float* bias, float eps, int64_t rows, int64_t dim,
                float* out);
void gelu_tanh(float* x, int64_t n);
}  // namespace reference

}  // namespace kvshare
