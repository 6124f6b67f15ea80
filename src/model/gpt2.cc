// GPT-2, as Hugging Face's GPT2LMHeadModel defines it (Radford et al. 2019):
//   x = wte[token] + wpe[pos]
//   per block:  x += c_proj(attention(c_attn(ln_1(x))))      c_attn makes q, k, v at once
//               x += mlp.c_proj(gelu_new(mlp.c_fc(ln_2(x))))
//   logits = ln_f(x) · wteᵀ                                     the LM head is tied to the embedding
// Hugging Face stores the projections as Conv1D, [in, out]; GGUF stores them as [out, in].
#include <algorithm>
#include <memory>

#include "kernels/ops.h"
#include "model/forward_common.h"
#include "model/model.h"
#include "model/weights.h"

namespace kvshare {
namespace {

struct Gpt2Layer {
  const float* ln1_w;  // [hidden]
  const float* ln1_b;  // [hidden]
  Linear qkv;          // hidden -> 3 * hidden (q, k, v concatenated), with bias
  Linear attn_out;     // hidden -> hidden, with bias
  const float* ln2_w;  // [hidden]
  const float* ln2_b;  // [hidden]
  Linear fc;           // hidden -> ffn, with bias
  Linear proj;         // ffn -> hidden, with bias
};

class Gpt2Model final : public Model {
 public:
  static Result<std::unique_ptr<Model>> create(const ModelConfig& c, TensorStore store, WeightSource src) {
    std::unique_ptr<Gpt2Model> m(new Gpt2Model(c));
    m->store_ = std::move(store);
    WeightLoader w(m->store_);
    const bool gguf = src == WeightSource::kGguf;
    const int64_t d = c.hidden_size, f = c.ffn_size;
    // Hugging Face checkpoints name tensors with or without the "transformer." prefix.
    const std::string pre = !gguf && w.has("transformer.wte.weight") ? "transformer." : "";
    auto hf = [&](const std::string& n) { return pre + n; };
    const WeightLayout layout = gguf ? WeightLayout::kOutIn : WeightLayout::kInOut;
    auto shape = [&](int64_t in, int64_t out) {
      return gguf ? std::vector<int64_t>{out, in} : std::vector<int64_t>{in, out};
    };
    KV_ASSIGN_OR_RETURN(m->wte_, w.floats(gguf ? "token_embd.weight" : hf("wte.weight"), {c.vocab_size, d}));
    KV_ASSIGN_OR_RETURN(m->wpe_, w.floats(gguf ? "position_embd.weight" : hf("wpe.weight"), {c.max_context, d}));
    KV_ASSIGN_OR_RETURN(m->lnf_w_, w.floats(gguf ? "output_norm.weight" : hf("ln_f.weight"), {d}));
    KV_ASSIGN_OR_RETURN(m->lnf_b_, w.floats(gguf ? "output_norm.bias" : hf("ln_f.bias"), {d}));
    for (int64_t i = 0; i < c.num_layers; ++i) {
      const std::string g = "blk." + std::to_string(i) + ".";
      const std::string h = hf("h." + std::to_string(i) + ".");
      auto name = [&](const char* gguf_name, const char* hf_name) { return gguf ? g + gguf_name : h + hf_name; };
      Gpt2Layer L{};
      KV_ASSIGN_OR_RETURN(L.ln1_w, w.floats(name("attn_norm.weight", "ln_1.weight"), {d}));
      KV_ASSIGN_OR_RETURN(L.ln1_b, w.floats(name("attn_norm.bias", "ln_1.bias"), {d}));
      KV_ASSIGN_OR_RETURN(const float* qkv_b, w.floats(name("attn_qkv.bias", "attn.c_attn.bias"), {3 * d}));
      KV_ASSIGN_OR_RETURN(L.qkv, w.linear(name("attn_qkv.weight", "attn.c_attn.weight"), shape(d, 3 * d), layout, qkv_b));
      KV_ASSIGN_OR_RETURN(const float* o_b, w.floats(name("attn_output.bias", "attn.c_proj.bias"), {d}));
      KV_ASSIGN_OR_RETURN(L.attn_out, w.linear(name("attn_output.weight", "attn.c_proj.weight"), shape(d, d), layout, o_b));
      KV_ASSIGN_OR_RETURN(L.ln2_w, w.floats(name("ffn_norm.weight", "ln_2.weight"), {d}));
      KV_ASSIGN_OR_RETURN(L.ln2_b, w.floats(name("ffn_norm.bias", "ln_2.bias"), {d}));
      KV_ASSIGN_OR_RETURN(const float* fc_b, w.floats(name("ffn_up.bias", "mlp.c_fc.bias"), {f}));
      KV_ASSIGN_OR_RETURN(L.fc, w.linear(name("ffn_up.weight", "mlp.c_fc.weight"), shape(d, f), layout, fc_b));
      KV_ASSIGN_OR_RETURN(const float* pr_b, w.floats(name("ffn_down.bias", "mlp.c_proj.bias"), {d}));
      KV_ASSIGN_OR_RETURN(L.proj, w.linear(name("ffn_down.weight", "mlp.c_proj.weight"), shape(f, d), layout, pr_b));
      m->layers_.push_back(std::move(L));
    }
    // The LM head: an untied lm_head.weight / output.weight when the files have one, else the embedding.
    const std::string head = gguf ? "output.weight" : "lm_head.weight";
    if (w.has(head)) {
      KV_ASSIGN_OR_RETURN(m->lm_head_, w.linear(head, {c.vocab_size, d}, WeightLayout::kOutIn));
    } else {
      KV_ASSIGN_OR_RETURN(m->lm_head_, w.linear(gguf ? "token_embd.weight" : hf("wte.weight"), {c.vocab_size, d},
                                                WeightLayout::kOutIn, nullptr, /*keep_stored=*/true));
    }
    KV_RETURN_IF_ERROR(w.check_every_tensor_used(c.model_type));
    m->owned_ = w.take_owned();
    m->matmul_weight_bytes_ = m->lm_head_.packed_bytes();
    for (const Gpt2Layer& L : m->layers_)
      m->matmul_weight_bytes_ += L.qkv.packed_bytes() + L.attn_out.packed_bytes() + L.fc.packed_bytes() + L.proj.packed_bytes();
    return std::unique_ptr<Model>(std::move(m));
  }

  Status forward(const ForwardBatch& b, KvStorage& kv, Activations& a, float* logits) const override {
    const ModelConfig& c = config_;
    KV_RETURN_IF_ERROR(validate_batch(b, c, kv));
    const int64_t n = b.num_tokens(), d = c.hidden_size;
    float* x = ensure(a.x, n * d);
    float* xn = ensure(a.xn, n * d);
    float* qkv = ensure(a.qkv, n * 3 * d);
    float* q = ensure(a.q, n * d);
    float* k = ensure(a.k, n * d);
    float* v = ensure(a.v, n * d);
    float* attn = ensure(a.attn, n * d);
    float* proj = ensure(a.proj, n * d);
    float* ffn = ensure(a.ffn_a, n * c.ffn_size);

    embed(wte_, d, b.tokens, x);
    for (int64_t t = 0; t < n; ++t) add_inplace(x + t * d, wpe_ + static_cast<int64_t>(b.positions[t]) * d, d);

    for (int64_t l = 0; l < c.num_layers; ++l) {
      const Gpt2Layer& L = layers_[l];
      layer_norm(x, L.ln1_w, L.ln1_b, c.norm_eps, n, d, xn);
      L.qkv.forward(xn, n, qkv);
#pragma omp parallel for if (n >= 64)
      for (int64_t t = 0; t < n; ++t) {  // split [q | k | v] rows
        std::copy_n(qkv + t * 3 * d, d, q + t * d);
        std::copy_n(qkv + t * 3 * d + d, d, k + t * d);
        std::copy_n(qkv + t * 3 * d + 2 * d, d, v + t * d);
      }
      cached_attention(b, kv, l, c, q, k, v, attn);
      L.attn_out.forward(attn, n, proj);
      add_inplace(x, proj, n * d);

      layer_norm(x, L.ln2_w, L.ln2_b, c.norm_eps, n, d, xn);
      L.fc.forward(xn, n, ffn);
      gelu_tanh(ffn, n, c.ffn_size);
      L.proj.forward(ffn, n, proj);
      add_inplace(x, proj, n * d);
    }
    const int64_t rows = static_cast<int64_t>(b.logit_rows.size());
    float* last = ensure(a.last, rows * d);
    gather_rows(x, d, b.logit_rows, last);
    layer_norm(last, lnf_w_, lnf_b_, c.norm_eps, rows, d, last);
    lm_head_.forward(last, rows, logits);
    return {};
  }

 private:
  explicit Gpt2Model(const ModelConfig& c) : Model(c) {}
  TensorStore store_;
  std::vector<std::vector<float>> owned_;
  const float* wte_ = nullptr;  // [vocab, hidden]
  const float* wpe_ = nullptr;  // [max_context, hidden]
  const float* lnf_w_ = nullptr;
  const float* lnf_b_ = nullptr;
  std::vector<Gpt2Layer> layers_;
  Linear lm_head_;  // hidden -> vocab
};

}  // namespace

Result<std::unique_ptr<Model>> build_gpt2(const ModelConfig& c, TensorStore store, WeightSource src) {
  return Gpt2Model::create(c, std::move(store), src);
}

}  // namespace kvshare
