// Llama, as Hugging Face's LlamaForCausalLM defines it (Touvron et al. 2023), and Qwen2 (Q/K/V biases):
//   x = embed[token]
//   per layer:  h = rms_norm(x)
//               q, k, v = h·Wq (+bq), h·Wk (+bk), h·Wv (+bv);  rope(q, k) at each token's position
//               x += Wo · attention(q, k, v)                   kv heads shared by groups of query heads
//               h = rms_norm(x);  x += W_down · (silu(h·W_gate) * (h·W_up))
//   logits = rms_norm(x) · W_headᵀ                              W_head = embed when tied
// GGUF files store Q and K rows in the interleaved RoPE order llama.cpp's converter writes; the config's
// rope_style says which pairs to rotate, so the stored tensors are used as they are.
#include <memory>

#include "kernels/ops.h"
#include "model/forward_common.h"
#include "model/model.h"
#include "model/weights.h"

namespace kvshare {
namespace {

struct LlamaLayer {
  const float* attn_norm;  // [hidden]
  Linear q;                // hidden -> heads * head_dim
  Linear k;                // hidden -> kv_heads * head_dim
  Linear v;                // hidden -> kv_heads * head_dim
  Linear o;                // heads * head_dim -> hidden
  const float* ffn_norm;   // [hidden]
  Linear gate;             // hidden -> ffn
  Linear up;               // hidden -> ffn
  Linear down;             // ffn -> hidden
};

class LlamaModel final : public Model {
 public:
  static Result<std::unique_ptr<Model>> create(const ModelConfig& c, TensorStore store, WeightSource src) {
    std::unique_ptr<LlamaModel> m(new LlamaModel(c));
    m->store_ = std::move(store);
    WeightLoader w(m->store_);
    const bool gguf = src == WeightSource::kGguf;
    const int64_t d = c.hidden_size, qd = c.num_heads * c.head_dim, kvd = c.num_kv_heads * c.head_dim, f = c.ffn_size;
    // A tied checkpoint may store the shared matrix once, as lm_head.weight only (safetensors has no aliases).
    // Holding neither, the tensor to name as missing is the embedding.
    const bool head_only = c.tie_embeddings && !w.has("model.embed_tokens.weight") && w.has("lm_head.weight");
    const char* embed_name = gguf ? "token_embd.weight" : head_only ? "lm_head.weight" : "model.embed_tokens.weight";
    KV_ASSIGN_OR_RETURN(m->embed_, w.floats(embed_name, {c.vocab_size, d}));
    KV_ASSIGN_OR_RETURN(m->final_norm_, w.floats(gguf ? "output_norm.weight" : "model.norm.weight", {d}));
    for (int64_t i = 0; i < c.num_layers; ++i) {
      const std::string g = "blk." + std::to_string(i) + ".";
      const std::string h = "model.layers." + std::to_string(i) + ".";
      auto name = [&](const char* gguf_name, const char* hf_name) { return gguf ? g + gguf_name : h + hf_name; };
      auto bias = [&](const char* gguf_name, const char* hf_name, int64_t n) -> Result<const float*> {
        if (!c.qkv_bias) return static_cast<const float*>(nullptr);
        return w.floats(name(gguf_name, hf_name), {n});
      };
      LlamaLayer L{};
      KV_ASSIGN_OR_RETURN(L.attn_norm, w.floats(name("attn_norm.weight", "input_layernorm.weight"), {d}));
      KV_ASSIGN_OR_RETURN(const float* bq, bias("attn_q.bias", "self_attn.q_proj.bias", qd));
      KV_ASSIGN_OR_RETURN(const float* bk, bias("attn_k.bias", "self_attn.k_proj.bias", kvd));
      KV_ASSIGN_OR_RETURN(const float* bv, bias("attn_v.bias", "self_attn.v_proj.bias", kvd));
      KV_ASSIGN_OR_RETURN(L.q, w.linear(name("attn_q.weight", "self_attn.q_proj.weight"), {qd, d}, WeightLayout::kOutIn, bq));
      KV_ASSIGN_OR_RETURN(L.k, w.linear(name("attn_k.weight", "self_attn.k_proj.weight"), {kvd, d}, WeightLayout::kOutIn, bk));
      KV_ASSIGN_OR_RETURN(L.v, w.linear(name("attn_v.weight", "self_attn.v_proj.weight"), {kvd, d}, WeightLayout::kOutIn, bv));
      const float* bo = nullptr;
      if (c.o_bias) {
        KV_ASSIGN_OR_RETURN(bo, w.floats(name("attn_output.bias", "self_attn.o_proj.bias"), {d}));
      }
      KV_ASSIGN_OR_RETURN(L.o, w.linear(name("attn_output.weight", "self_attn.o_proj.weight"), {d, qd}, WeightLayout::kOutIn, bo));
      KV_ASSIGN_OR_RETURN(L.ffn_norm, w.floats(name("ffn_norm.weight", "post_attention_layernorm.weight"), {d}));
      KV_ASSIGN_OR_RETURN(L.gate, w.linear(name("ffn_gate.weight", "mlp.gate_proj.weight"), {f, d}, WeightLayout::kOutIn));
      KV_ASSIGN_OR_RETURN(L.up, w.linear(name("ffn_up.weight", "mlp.up_proj.weight"), {f, d}, WeightLayout::kOutIn));
      KV_ASSIGN_OR_RETURN(L.down, w.linear(name("ffn_down.weight", "mlp.down_proj.weight"), {d, f}, WeightLayout::kOutIn));
      m->layers_.push_back(std::move(L));
    }
    const std::string head = gguf ? "output.weight" : "lm_head.weight";
    if (w.has(head)) {
      KV_ASSIGN_OR_RETURN(m->lm_head_, w.linear(head, {c.vocab_size, d}, WeightLayout::kOutIn));
    } else if (c.tie_embeddings || gguf) {
      KV_ASSIGN_OR_RETURN(m->lm_head_,
                          w.linear(embed_name, {c.vocab_size, d}, WeightLayout::kOutIn, nullptr, /*keep_stored=*/true));
    } else {
      return not_found("the model has no tensor 'lm_head.weight' and config.json says tie_word_embeddings is false");
    }
    m->inv_freq_ = c.rope_inv_freq();
    KV_RETURN_IF_ERROR(w.check_every_tensor_used(c.model_type));
    m->owned_ = w.take_owned();
    m->matmul_weight_bytes_ = m->lm_head_.packed_bytes();
    for (const LlamaLayer& L : m->layers_)
      for (const Linear* lin : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) m->matmul_weight_bytes_ += lin->packed_bytes();
    return std::unique_ptr<Model>(std::move(m));
  }

  Status forward(const ForwardBatch& b, KvStorage& kv, Activations& a, float* logits) const override {
    const ModelConfig& c = config_;
    KV_RETURN_IF_ERROR(validate_batch(b, c, kv));
    const int64_t n = b.num_tokens(), d = c.hidden_size, hd = c.head_dim, half = hd / 2;
    const int64_t qd = c.num_heads * hd, kvd = c.num_kv_heads * hd, f = c.ffn_size;
    float* x = ensure(a.x, n * d);
    float* xn = ensure(a.xn, n * d);
    float* q = ensure(a.q, n * qd);
    float* k = ensure(a.k, n * kvd);
    float* v = ensure(a.v, n * kvd);
    float* attn = ensure(a.attn, n * qd);
    float* proj = ensure(a.proj, n * d);
    float* gate = ensure(a.ffn_a, n * f);
    float* up = ensure(a.ffn_b, n * f);
    float* cos = ensure(a.rope_cos, n * half);
    float* sin = ensure(a.rope_sin, n * half);

    rope_tables(b.positions.data(), n, inv_freq_.data(), half, cos, sin);
    embed(embed_, d, b.tokens, x);
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const LlamaLayer& L = layers_[l];
      rms_norm(x, L.attn_norm, c.norm_eps, n, d, xn);
      L.q.forward(xn, n, q);
      L.k.forward(xn, n, k);
      L.v.forward(xn, n, v);
      apply_rope(q, n, c.num_heads, hd, cos, sin, c.rope_style);
      apply_rope(k, n, c.num_kv_heads, hd, cos, sin, c.rope_style);
      cached_attention(b, kv, l, c, q, k, v, attn);
      L.o.forward(attn, n, proj);
      add_inplace(x, proj, n * d);

      rms_norm(x, L.ffn_norm, c.norm_eps, n, d, xn);
      L.gate.forward(xn, n, gate);
      L.up.forward(xn, n, up);
      silu_mul(gate, up, n, f, gate);
      L.down.forward(gate, n, proj);
      add_inplace(x, proj, n * d);
    }
    const int64_t rows = static_cast<int64_t>(b.logit_rows.size());
    float* last = ensure(a.last, rows * d);
    gather_rows(x, d, b.logit_rows, last);
    rms_norm(last, final_norm_, c.norm_eps, rows, d, last);
    lm_head_.forward(last, rows, logits);
    return {};
  }

 private:
  explicit LlamaModel(const ModelConfig& c) : Model(c) {}
  TensorStore store_;
  std::vector<std::vector<float>> owned_;
  const float* embed_ = nullptr;       // [vocab, hidden]
  const float* final_norm_ = nullptr;  // [hidden]
  std::vector<LlamaLayer> layers_;
  Linear lm_head_;                     // hidden -> vocab
  std::vector<float> inv_freq_;        // [head_dim / 2]
};

}  // namespace

Result<std::unique_ptr<Model>> build_llama(const ModelConfig& c, TensorStore store, WeightSource src) {
  return LlamaModel::create(c, std::move(store), src);
}

}  // namespace kvshare
