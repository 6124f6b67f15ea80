#include "kernels/ops.h"

#include <cmath>

#include "core/det_math.h"
#include "kernels/kernel_table.h"

namespace kvshare {

void rms_norm(const float* x, const float* weight, float eps, int64_t rows, int64_t dim, float* out) {
  const KernelTable& kt = kernels();
#pragma omp parallel for if (rows * dim > 32768)
  for (int64_t r = 0; r < rows; ++r) kt.rms_norm_row(x + r * dim, weight, eps, dim, out + r * dim);
}

void layer_norm(const float* x, const float* weight, const float* bias, float eps, int64_t rows, int64_t dim,
                float* out) {
  const KernelTable& kt = kernels();
#pragma omp parallel for if (rows * dim > 32768)
  for (int64_t r = 0; r < rows; ++r) kt.layer_norm_row(x + r * dim, weight, bias, eps, dim, out + r * dim);
}

void rope_tables(const int32_t* positions, int64_t tokens, const float* inv_freq, int64_t half_dim, float* cos,
                 float* sin) {
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < half_dim; ++i) {
      const float angle = static_cast<float>(positions[t]) * inv_freq[i];  // in float, as Hugging Face does
      double s, c;
      det::sincos(angle, &s, &c);  // not libm: the same bits on every CPU
      cos[t * half_dim + i] = static_cast<float>(c);
      sin[t * half_dim + i] = static_cast<float>(s);
    }
  }
}

void apply_rope(float* x, int64_t tokens, int64_t num_heads, int64_t head_dim, const float* cos, const float* sin,
                RopeStyle style) {
  const int64_t half = head_dim / 2;
#pragma omp parallel for if (tokens * num_heads * head_dim > 32768)
  for (int64_t t = 0; t < tokens; ++t) {
    const float* c = cos + t * half;
    const float* s = sin + t * half;
    for (int64_t h = 0; h < num_heads; ++h) {
      float* v = x + (t * num_heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const int64_t a = style == RopeStyle::kHalf ? i : 2 * i;
        const int64_t b = style == RopeStyle::kHalf ? i + half : 2 * i + 1;
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * c[i] - x1 * s[i];
        v[b] = x1 * c[i] + x0 * s[i];
      }
    }
  }
}

void gelu_tanh(float* x, int64_t rows, int64_t cols) {
  const KernelTable& kt = kernels();
#pragma omp parallel for if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; ++r) kt.gelu_tanh_row(x + r * cols, cols);
}

void silu_mul(const float* gate, const float* up, int64_t rows, int64_t ffn, float* out) {
  const KernelTable& kt = kernels();
#pragma omp parallel for if (rows * ffn > 65536)
  for (int64_t r = 0; r < rows; ++r) kt.silu_mul_row(gate + r * ffn, up + r * ffn, ffn, out + r * ffn);
}

void add_inplace(float* x, const float* y, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

namespace reference {

void rms_norm(const float* x, const float* weight, float eps, int64_t rows, int64_t dim, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[r * dim + i]) * x[r * dim + i];
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int64_t i = 0; i < dim; ++i) out[r * dim + i] = static_cast<float>(x[r * dim + i] * inv * weight[i]);
  }
}

void layer_norm(const float* x, const float* weight, const float* bias, float eps, int64_t rows, int64_t dim,
                float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < dim; ++i) mean += x[r * dim + i];
    mean /= dim;
    for (int64_t i = 0; i < dim; ++i) var += (x[r * dim + i] - mean) * (x[r * dim + i] - mean);
    var /= dim;
    const double inv = 1.0 / std::sqrt(var + eps);
    for (int64_t i = 0; i < dim; ++i)
      out[r * dim + i] = static_cast<float>((x[r * dim + i] - mean) * inv * weight[i] + bias[i]);
  }
}

void gelu_tanh(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    x[i] = static_cast<float>(0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v))));
  }
}

}  // namespace reference
}  // namespace kvshare
