#!/usr/bin/env python3
"""Independent PyTorch (float32, CPU) reference of two pretrained masked-diffusion LLMs, plus
tiny random-weight checkpoints in their exact Hugging Face layouts, for the Rust loader tests,
and a random-weight forward timer (CPU or CUDA, f32 / bf16 / f16).

Architectures (written from the public modeling code, not imported from it):

* LLaDA (`GSAI-ML/LLaDA-8B-Base` / `-Instruct`, `model_type` "llada", `LLaDAModelLM`), from
  `modeling_llada.py` / `configuration_llada.py` as shipped in the HF snapshot (read in the
  vendored copies `monash-yann/dllm-research:models/LLaDA-8B-Instruct/modeling_llada.py` and
  `hxhcreate/DARE:models/LLaDA-8B-Instruct/{modeling_llada.py,config.json}`; original code
  https://github.com/ML-GSAI/LLaDA). `block_type` "llama" = `LLaDALlamaBlock`:
      h  = x + attn_out(Attn(RoPE(q_proj(n)), RoPE(k_proj(n)), v_proj(n))),  n = attn_norm(x)
      y  = h + ff_out(silu(ff_proj(m)) * up_proj(m)),                       m = ff_norm(h)
  RMSNorm (eps `rms_norm_eps`, weight only: `bias_for_layer_norm` false), rotate-half RoPE over
  the full head dim (`rope_theta`), full bidirectional attention: the HF code calls SDPA with
  `attn_mask=None, is_causal=False` (it ignores any attention mask), no biases (`include_bias`,
  `include_qkv_bias` false), final `ln_f`, output `transformer.ff_out` (`weight_tying` false),
  no embedding or logit scaling (`input_emb_norm` false, `scale_logits` false).
* Dream (`Dream-org/Dream-v0-Instruct-7B` / `-Base-7B`; DiffuCoder uses the same code), from
  `modeling_dream.py` / `configuration_dream.py` / `generation_utils.py` (read in
  `hxhcreate/DARE:models/Dream-v0-Instruct-7B/modeling_dream.py`, `NVlabs/Fast-dLLM:
  dream/model/modeling_dream.py`, `zhhangBian/Fast-dLLM-note:dream/model/configuration_dream.py`,
  `lamawmouk/Fast-dLLM:dream/model/generation_utils.py`; original https://github.com/HKUNLP/Dream).
  Qwen2 layout: pre-norm RMSNorm, q/k/v with bias, o_proj without, GQA (repeat_kv: query head h
  reads kv head h // (heads / kv_heads)), rotate-half RoPE, SwiGLU `down(silu(gate(x)) * up(x))`,
  SDPA with `is_causal=False` ("hard coded") and no mask when nothing is padded. The raw logits
  at position i predict token i+1: `generation_utils.py` shifts them,
  `logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)`. `reference.safetensors` holds the
  RAW (unshifted) logits.

Modes:

    python3 benches/pytorch_pretrained_reference.py make-fixtures tests/fixtures/pretrained
    python3 benches/pytorch_pretrained_reference.py make-random /tmp/dream-1b --arch dream \
        --tokenizer PATH/tokenizer.json --hidden 1024 --layers 4 --heads 16 --kv-heads 2 --ffn 2816 \
        [--vocab 152064] [--seed S] [--dtype bf16|f32] [--shards 2] [--reference]
    python3 benches/pytorch_pretrained_reference.py check tests/fixtures/pretrained/llada-tiny
    python3 benches/pytorch_pretrained_reference.py time --arch dream --hidden 896 --layers 24 \
        --heads 14 --kv-heads 2 --ffn 4864 --vocab 151936 --seq 256 --batch 1 --threads 8 --reps 5
    python3 benches/pytorch_pretrained_reference.py time --preset llada-8b --device cuda --dtype bf16 \
        --seqs 128,256,512 [--layers N ...] [--warmup 2] [--reps 5]

`time`: a random-weight LLaDA or Dream built from sizes, the forward pass (`inference_mode`) timed
at each length of `--seqs` (comma list; `--seq N` = one length) in one process and one model build:
`--warmup` untimed calls, then `--reps` timed ones, per length. Sizes: `--arch --hidden --layers
--heads --kv-heads --ffn --vocab` (`--rope-theta` / `--eps` default to the real model's), or
`--preset llada-8b` (d_model 4096, 32 layers, 32 heads / 32 kv heads, mlp 12288, vocab 126464,
rope_theta 5e5, eps 1e-5) / `--preset dream-7b` (hidden 3584, 28 layers, 28 heads / 4 kv heads,
intermediate 18944, vocab 152064, rope_theta 1e6, eps 1e-6); a size flag given with a preset
overrides it (e.g. `--layers 1`). `--device cpu|cuda` (default cpu), `--dtype f32|bf16|f16`
(default f32): the module is built on `meta`, cast there and `to_empty`'d onto the device, so every
parameter is allocated once, on the device, in that dtype (no float32 or host copy: LLaDA-8B in
bf16 is 16 GB), then filled in place: RMSNorm weights 1, every other parameter N(0, 0.02).
Activations follow the weights' dtype as the HF code does under `torch_dtype`: RMSNorm in float32
and cast back, LLaDA's RoPE in float32 and cast back, Dream's cos/sin cast to the activation dtype
(all no-ops in float32). On CUDA each timed call sits between two `torch.cuda.synchronize()`; the
peak memory is `torch.cuda.max_memory_allocated` / `max_memory_reserved`, reset before each
length (weights included; `weights_mib` is their share). Output: one JSON line per length (flushed
at once) with device, dtype, seq, the sizes, `params`, `weights_mib`, `build_s` (includes torch's
one-time start-up, ~2 s), `min_ms`, `median_ms`, `times_ms`, on CUDA `gpu`, `cuda`,
`float32_matmul_precision`, `peak_mem_mib`, `peak_reserved_mib`, and `host_peak_rss_mib` (the
process high-water mark so far, `import torch` alone ~0.5 GB). A length that runs out of GPU memory
gives a line with `error` and the run goes on with the next one.

`check` also works on a real snapshot directory (config.json + one or several safetensors through
`model.safetensors.index.json`), e.g. `check ~/hf/LLaDA-8B-Instruct`: it then only needs a
`reference.safetensors` there; `load_snapshot()` loads the bf16 weights, upcast to float32, with
`load_state_dict(strict=True)`: the module parameter names ARE the checkpoint tensor names.
`check` prints the max abs / relative (to max |logit|) error of this float32 model against the stored
logits and of a second, independent float64 numpy forward (`numpy_forward`, explicit per-head loops;
skip it with `--no-numpy` on a 7B snapshot); it exits 1 above `--tol` (1e-5).

Fixtures (`make-fixtures OUT`, fixed seeds, deterministic): `OUT/llada-tiny/` and `OUT/dream-tiny/`
each hold config.json (every field name of the real config, tiny sizes: hidden 32, 2 layers,
4 heads, LLaDA 4 kv heads as the real model, Dream 2 kv heads (GQA), ffn 48, vocab = tokenizer
size rounded up to a multiple of 128, as the real 126464 / 152064 are), weights in bfloat16 split
over `model-00001-of-00002.safetensors` / `model-00002-of-00002.safetensors` with
`model.safetensors.index.json` ({"metadata": {"total_size"}, "weight_map"}), tokenizer.json (byte-
level BPE trained here on the inline corpus, ByteLevel pre-tokenizer/decoder, add_prefix_space
false, plus the real special tokens of the model in the real order), tokenizer_config.json,
special_tokens_map.json, generation_config.json, reference.safetensors (`input_ids` int64 [2, 12],
`logits` f32 [2, 12, V] computed here in float32 from the bf16 weights upcast) and
chat_reference.json.

`make-random OUT --arch llada|dream --tokenizer T ...`: a random-weight snapshot at any size in the
same layout as the fixtures: config.json with the fixture's field set and these sizes
(`torch_dtype` from `--dtype`), tokenizer.json copied from T, tokenizer_config.json /
special_tokens_map.json / generation_config.json as the fixture writes them (Dream: plus vocab.json
and merges.txt when T is a BPE), `added_tokens_decoder` = T's added tokens. vocab_size (LLaDA: and
embedding_size) = `--vocab`, else T's size rounded up to a multiple of 128 (pass `--vocab 126464` /
`152064` for the real sizes: the real paddings are not that round-up). mask / eos (= pad) ids, and
LLaDA's bos `<|startoftext|>`, are looked up by text in T (LLaDA `<|mdm_mask|>` / `<|endoftext|>`,
Dream `<|mask|>` / `<|endoftext|>`); a missing one is an error, a missing chat-template token only a
warning. Weights: the fixtures' init (`init_value`, same generator stream as `init_weights`; default
seeds 1234 / 4321 as the fixtures), drawn tensor by tensor without building the module, in
`--shards` files (layers split evenly, embeddings in the first, norm + head in the last;
`--shards 1`: one `model.safetensors`, no index), each shard written as soon as it is complete. With
the fixture sizes and tokenizer it reproduces the fixture files byte for byte. `--reference` also
writes reference.safetensors (`input_ids` [1, 16] with mask positions, float32 raw logits) and
chat_reference.json, so `check OUT` works on it.

Weight init of the fixtures: embeddings N(0, 0.5), projection matrices N(0, 1/fan_in) (std
~0.18 at hidden 32, not 0.02: with std 0.02 the attention scores of a 32-wide model are ~1e-2,
attention is uniform and a RoPE / GQA / head-order bug would not move the logits), norm weights
1 + 0.1 N(0, 1), Dream q/k/v biases N(0, 0.1) (nonzero so a dropped bias shows).

Chat templates: LLaDA-8B-Instruct ships the Llama-3 template (`bos_token` + per message
`'<|start_header_id|>' + role + '<|end_header_id|>\\n\\n' + content|trim + '<|eot_id|>'`, then
`'<|start_header_id|>assistant<|end_header_id|>\\n\\n'` if add_generation_prompt). The exact
tokenizer_config.json of the LLaDA snapshot was NOT found in the searchable sources; the string
below is the Llama-3-8B-Instruct template, which produces exactly the prompts LLaDA code in
several public repositories hard-codes (`<|startoftext|><|start_header_id|>user<|end_header_id|>
\\n\\n...<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n`). Dream-v0-Instruct-7B:
the tokenizer_config.json was NOT found either; the template used is the Qwen2 ChatML one with
the default system prompt "You are a helpful assistant." (an assumption: Dream is a Qwen2.5
finetune and Qwen2's template has this default).
Rendering follows transformers' `apply_chat_template`: `jinja2.sandbox.ImmutableSandboxedEnvironment(
trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])`, filter `tojson`, globals
`raise_exception` / `strftime_now`, variables `messages`, `add_generation_prompt` and the special
tokens map (`bos_token`, `eos_token`, `pad_token`, `unk_token`, `mask_token`, ... as strings).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

# ----------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """`weight * x / sqrt(mean(x^2) + eps)` (LLaDA `RMSLayerNorm`, Dream `DreamRMSNorm`)."""

    def __init__(self, size, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_cos_sin(positions, head_dim, theta):
    """cos, sin [..., L, head_dim] of rotate-half RoPE: inv_freq_j = theta^(-2j/d), j < d/2,
    angle = pos * inv_freq, duplicated (cat(freqs, freqs)) over both halves. Always float32, on
    the device of `positions`."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32,
                                             device=positions.device) / head_dim))
    freqs = positions.to(torch.float32)[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def apply_rope(x, cos, sin):
    return x * cos + rotate_half(x) * sin


def attention(q, k, v, n_heads, n_kv_heads, mask=None):
    """q [B, H, L, d], k/v [B, Hkv, L, d]; GQA: query head h reads kv head h // (H / Hkv)
    (HF `repeat_kv` / LLaDA `repeat_interleave`). Softmax(q k^T / sqrt(d)) v, bidirectional."""
    if n_kv_heads != n_heads:
        rep = n_heads // n_kv_heads
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False)


# ----------------------------------------------------------------------------------------------
# LLaDA
# ----------------------------------------------------------------------------------------------


class LLaDABlock(nn.Module):
    """`LLaDALlamaBlock`: names attn_norm, ff_norm, q_proj, k_proj, v_proj, attn_out, ff_proj,
    up_proj, ff_out."""

    def __init__(self, c):
        super().__init__()
        d, h = c["d_model"], c["n_heads"]
        kvh = c.get("n_kv_heads") or h
        hd = d // h
        ffn = c.get("mlp_hidden_size") or c.get("mlp_ratio", 4) * d
        bias = bool(c.get("include_bias", False))
        qkv_bias = bias or bool(c.get("include_qkv_bias", False))
        ln_bias = c.get("bias_for_layer_norm")
        if ln_bias is None:
            ln_bias = bias
        assert not ln_bias, "LLaDA layer-norm bias is not implemented (false in every release)"
        assert c.get("activation_type", "silu") in ("silu", "swiglu")
        assert c.get("layer_norm_type", "rms") == "rms"
        assert not c.get("attention_layer_norm", False)
        self.h, self.kvh, self.hd, self.theta = h, kvh, hd, float(c["rope_theta"])
        self.attn_norm = RMSNorm(d, c["rms_norm_eps"])
        self.ff_norm = RMSNorm(d, c["rms_norm_eps"])
        self.q_proj = nn.Linear(d, d, bias=qkv_bias)
        self.k_proj = nn.Linear(d, kvh * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(d, kvh * hd, bias=qkv_bias)
        self.attn_out = nn.Linear(d, d, bias=bias)
        self.ff_proj = nn.Linear(d, ffn, bias=bias)  # gated by silu
        self.up_proj = nn.Linear(d, ffn, bias=bias)
        self.ff_out = nn.Linear(ffn, d, bias=bias)

    def forward(self, x, cos, sin):
        b, l, d = x.shape
        n = self.attn_norm(x)
        q = self.q_proj(n).view(b, l, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(n).view(b, l, self.kvh, self.hd).transpose(1, 2)
        v = self.v_proj(n).view(b, l, self.kvh, self.hd).transpose(1, 2)
        # LLaDA's RotaryEmbedding rotates q, k in float32 and casts back (a no-op in float32).
        q, k = apply_rope(q.float(), cos, sin).to(v.dtype), apply_rope(k.float(), cos, sin).to(v.dtype)
        a = attention(q, k, v, self.h, self.kvh)  # LLaDA passes no mask at all
        x = x + self.attn_out(a.transpose(1, 2).reshape(b, l, d))
        m = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(m)) * self.up_proj(m))


class _LLaDAInner(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        emb = c.get("embedding_size") or c["vocab_size"]
        t = nn.ModuleDict(
            dict(
                wte=nn.Embedding(emb, d),
                blocks=nn.ModuleList(LLaDABlock(c) for _ in range(c["n_layers"])),
                ln_f=RMSNorm(d, c["rms_norm_eps"]),
            )
        )
        if not c.get("weight_tying", False):
            t["ff_out"] = nn.Linear(d, emb, bias=bool(c.get("include_bias", False)))
        self.transformer = t


class LLaDA(nn.Module):
    """`LLaDAModelLM`; state_dict keys are `model.transformer.*` exactly as in the snapshot."""

    def __init__(self, cfg):
        super().__init__()
        assert cfg.get("block_type", "llama") == "llama", cfg.get("block_type")
        assert cfg.get("rope", True) and not cfg.get("alibi", False)
        assert not cfg.get("input_emb_norm", False) and not cfg.get("scale_logits", False)
        self.cfg = cfg
        self.model = _LLaDAInner(cfg)

    def forward(self, input_ids):
        c, t = self.cfg, self.model.transformer
        x = t.wte(input_ids)
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        cos, sin = rope_cos_sin(pos, c["d_model"] // c["n_heads"], float(c["rope_theta"]))
        for blk in t.blocks:
            x = blk(x, cos, sin)
        x = t.ln_f(x)
        return F.linear(x, t.wte.weight) if c.get("weight_tying", False) else t.ff_out(x)


# ----------------------------------------------------------------------------------------------
# Dream
# ----------------------------------------------------------------------------------------------


class DreamAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, h, kvh = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
        self.h, self.kvh, self.hd = h, kvh, d // h
        self.q_proj = nn.Linear(d, h * self.hd, bias=True)
        self.k_proj = nn.Linear(d, kvh * self.hd, bias=True)
        self.v_proj = nn.Linear(d, kvh * self.hd, bias=True)
        self.o_proj = nn.Linear(h * self.hd, d, bias=False)

    def forward(self, x, cos, sin, mask):
        b, l, d = x.shape
        q = self.q_proj(x).view(b, l, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, l, self.kvh, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, l, self.kvh, self.hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        a = attention(q, k, v, self.h, self.kvh, mask)
        return self.o_proj(a.transpose(1, 2).reshape(b, l, self.h * self.hd))


class DreamMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, f = c["hidden_size"], c["intermediate_size"]
        assert c.get("hidden_act", "silu") == "silu"
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DreamLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = DreamAttention(c)
        self.mlp = DreamMLP(c)
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class _DreamInner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(DreamLayer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class Dream(nn.Module):
    """`DreamModel`; state_dict keys `model.*` and `lm_head.weight` exactly as in the snapshot."""

    def __init__(self, cfg):
        super().__init__()
        assert cfg.get("rope_scaling") is None, "rope_scaling is not implemented"
        assert not cfg.get("use_sliding_window", False)
        self.cfg = cfg
        self.model = _DreamInner(cfg)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        if cfg.get("tie_word_embeddings", False):
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids, attention_mask=None):
        """Raw logits (position i predicts token i+1). `attention_mask` [B, L] of 0/1 (padding)
        follows `generation_utils._sample`: positions cumsum(mask) - 1 (1 at padding), and the
        pairwise [B, 1, L, L] boolean mask mask_i AND mask_j; without padding: full attention,
        positions 0..L-1."""
        c = self.cfg
        x = self.model.embed_tokens(input_ids)
        b, l = input_ids.shape
        mask = None
        if attention_mask is not None and bool((attention_mask == 0).any()):
            am = attention_mask.to(torch.long)
            pos = am.cumsum(-1) - 1
            pos = pos.masked_fill(am == 0, 1)
            mask = (am[:, None, :, None] != 0) & (am[:, None, None, :] != 0)
        else:
            pos = torch.arange(l, device=input_ids.device)[None, :]
        hd = c["hidden_size"] // c["num_attention_heads"]
        cos, sin = rope_cos_sin(pos, hd, float(c["rope_theta"]))
        # Qwen2 / Dream cast cos, sin to the activation dtype (a no-op in float32).
        cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)  # [B or 1, 1, L, hd]
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        return self.lm_head(self.model.norm(x))


def shift_dream_logits(logits):
    """What Dream's generation_utils does before sampling: logits[:, i] <- raw[:, i - 1]."""
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


# ----------------------------------------------------------------------------------------------
# Snapshot loading
# ----------------------------------------------------------------------------------------------


def build(cfg):
    mt = cfg.get("model_type")
    if mt == "llada":
        return LLaDA(cfg)
    if mt in ("Dream", "dream"):
        return Dream(cfg)
    raise SystemExit(f"unsupported model_type {mt!r}")


def load_state(snapshot):
    index = os.path.join(snapshot, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    state = {}
    for name in files:
        for k, v in load_file(os.path.join(snapshot, name)).items():
            assert k not in state, f"{k} in two shards"
            state[k] = v.to(torch.float32)
    return state


def load_snapshot(snapshot):
    """Model (float32, eval) from a snapshot dir: config.json + safetensors (bf16 upcast)."""
    with open(os.path.join(snapshot, "config.json")) as f:
        cfg = json.load(f)
    model = build(cfg)
    state = load_state(snapshot)
    if isinstance(model, Dream) and cfg.get("tie_word_embeddings") and "lm_head.weight" not in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    if isinstance(model, LLaDA) and cfg.get("weight_tying"):
        state.pop("model.transformer.ff_out.weight", None)
    model.load_state_dict(state, strict=True)
    return cfg, model.eval()


# ----------------------------------------------------------------------------------------------
# Tiny tokenizers
# ----------------------------------------------------------------------------------------------

_SENTENCES = """\
The quick brown fox jumps over the lazy dog.
A diffusion language model fills in masked tokens in parallel.
Every step unmasks the positions the model is most confident about.
Give me a JSON object with a name, an age and a list of tags.
The weather in Paris was cold and rainy on Monday morning.
She opened the window, and the smell of fresh bread filled the room.
Numbers like 3.14, 42 and -7 appear in many documents.
Please answer in one short sentence.
You are a helpful assistant that writes valid JSON.
The train to Berlin leaves at half past nine from platform four.
He said that the report would be ready by Friday afternoon.
Tokens are pieces of words; spaces usually stick to the next word.
Write a function that returns the sum of two integers.
The library closes early on Sundays and public holidays.
Our team shipped the new release after three weeks of testing.
Masked tokens are predicted from both the left and the right context.
What is the capital of France? The capital of France is Paris.
Temperature controls how random the sampling is.
A block of thirty-two tokens is decoded before the next block starts.
The cat sat on the mat, and the dog slept by the door.
Hello, world! How are you today?
I would like a cup of coffee with milk and no sugar.
The server returned status 200 and an empty body.
Rivers, mountains and forests cover most of the northern region.
Keep the answer under one hundred words.
The meeting was moved to Thursday at ten o'clock.
Lists, objects, strings, numbers, booleans and null are JSON values.
The model predicts a distribution over the whole vocabulary at every position.
Children played football in the park until the sun went down.
Remember to close every bracket and every quote.
""".splitlines()

_NAMES = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy"]
_CITIES = ["Paris", "Berlin", "Tokyo", "Lima", "Oslo", "Cairo", "Quito", "Seoul", "Rome", "Perth"]
_TAGS = ["admin", "guest", "editor", "owner", "viewer", "tester"]


def corpus_lines():
    """A few hundred lines of English and JSON, deterministic."""
    lines = list(_SENTENCES)
    for i, name in enumerate(_NAMES):
        for j, city in enumerate(_CITIES):
            age = 20 + (7 * i + 3 * j) % 50
            tags = [_TAGS[(i + j) % len(_TAGS)], _TAGS[(i * j + 1) % len(_TAGS)]]
            obj = {"name": name, "age": age, "city": city, "tags": tags, "active": (i + j) % 2 == 0}
            if (i + j) % 3 == 0:
                lines.append(json.dumps(obj))
            elif (i + j) % 3 == 1:
                lines.append(json.dumps(obj, indent=2))
            else:
                lines.append(f"{name} is {age} years old and lives in {city}.")
    for k in range(40):
        lines.append(json.dumps({"id": k, "score": round(k * 0.37, 2), "ok": k % 3 != 0, "note": None}))
        lines.append(_SENTENCES[k % len(_SENTENCES)].lower())
    return lines


def train_tokenizer(bpe_vocab, specials):
    """Byte-level BPE (ByteLevel pre-tokenizer / decoder / post-processor, add_prefix_space
    false) with `specials` = [(content, special)] appended after the BPE vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_vocab,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    for content, special in specials:
        t = AddedToken(content, single_word=False, lstrip=False, rstrip=False, normalized=False, special=special)
        if special:
            tok.add_special_tokens([t])
        else:
            tok.add_tokens([t])
    return tok


def round_up(n, m=128):
    return (n + m - 1) // m * m


# ----------------------------------------------------------------------------------------------
# Chat templates and rendering
# ----------------------------------------------------------------------------------------------

# Llama-3 (8B-Instruct) template; see the module docstring on provenance.
LLADA_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# Qwen2 ChatML template with the default system prompt; see the module docstring on provenance.
DREAM_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def render_chat(template, messages, add_generation_prompt, special_tokens_map):
    """As transformers' `apply_chat_template(..., tokenize=False)` renders."""
    import datetime

    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env.from_string(template).render(
        messages=messages, tools=None, documents=None, add_generation_prompt=add_generation_prompt, **special_tokens_map
    )


CHAT_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that answers in JSON."},
    {"role": "user", "content": "Give me a JSON object."},
]
USER_ONLY = [{"role": "user", "content": "Give me a JSON object."}]

# ----------------------------------------------------------------------------------------------
# Fixture writing
# ----------------------------------------------------------------------------------------------


def dump_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def init_value(name, shape, g, bias_std):
    """The float32 init of one parameter (see the module docstring), drawn from generator `g`;
    in place on the one draw, so a 152064 x 1024 embedding costs one float32 buffer."""
    x = torch.randn(shape, generator=g)
    if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
        return x.mul_(0.1).add_(1.0)
    if name.endswith(".bias"):
        return x.mul_(bias_std)
    if "wte" in name or "embed_tokens" in name:
        return x.mul_(0.5)
    return x.div_(math.sqrt(shape[1]))  # [out, in]


def init_weights(model, seed, bias_std):
    """`init_value` over `named_parameters()` in order, one generator seeded with `seed`."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(init_value(name, tuple(p.shape), g, bias_std))


def write_sharded(model, out_dir, first_shard):
    """bf16 tensors in two shards + model.safetensors.index.json, HF format."""
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    shards = ({}, {})
    for k, v in state.items():
        shards[0 if first_shard(k) else 1][k] = v
    weight_map = {}
    for shard, name in zip(shards, names):
        save_file(shard, os.path.join(out_dir, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    total = sum(v.numel() * v.element_size() for v in state.values())
    dump_json(
        os.path.join(out_dir, "model.safetensors.index.json"),
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
    )


def added_tokens_decoder(tok, specials):
    out = {}
    for content, special in specials:
        out[str(tok.token_to_id(content))] = {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
    return out


def write_reference(out_dir, input_ids):
    cfg, model = load_snapshot(out_dir)  # from the bf16 files just written, upcast to f32
    with torch.no_grad():
        logits = model(input_ids).to(torch.float32).contiguous()
    save_file({"input_ids": input_ids.to(torch.int64).contiguous(), "logits": logits},
              os.path.join(out_dir, "reference.safetensors"))
    return logits


def write_chat_reference(out_dir, tok, template, special_map):
    def one(messages):
        rendered = render_chat(template, messages, True, special_map)
        ids = tok.encode(rendered, add_special_tokens=False).ids
        return {"messages": messages, "add_generation_prompt": True, "rendered": rendered, "input_ids": ids}

    ref = one(CHAT_MESSAGES)
    ref["special_tokens"] = special_map
    ref["user_only"] = one(USER_ONLY)
    ref["note"] = ("rendered with jinja2 ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, "
                   "loopcontrols) and the special-token strings, as transformers' apply_chat_template; "
                   "input_ids = tokenizer.json encode(rendered, add_special_tokens=False)")
    dump_json(os.path.join(out_dir, "chat_reference.json"), ref)


def ids_of(tok, text):
    return tok.encode(text, add_special_tokens=False).ids


def llada_config(vocab, eos, mask, hidden, layers, heads, kv_heads, ffn, torch_dtype="bfloat16"):
    """config.json of `GSAI-ML/LLaDA-8B-*` (every field of the real one) with these sizes / ids."""
    return {
        "activation_type": "silu",
        "alibi": False,
        "alibi_bias_max": 8.0,
        "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0,
        "attention_layer_norm": False,
        "attention_layer_norm_with_affine": True,
        "auto_map": {
            "AutoConfig": "configuration_llada.LLaDAConfig",
            "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
            "AutoModel": "modeling_llada.LLaDAModelLM",
        },
        "bias_for_layer_norm": False,
        "block_group_size": 1,
        "block_type": "llama",
        "d_model": hidden,
        "embedding_dropout": 0.0,
        "embedding_size": vocab,
        "eos_token_id": eos,
        "flash_attention": False,
        "include_bias": False,
        "include_qkv_bias": False,
        "init_cutoff_factor": None,
        "init_device": "meta",
        "init_fn": "mitchell",
        "init_std": 0.02,
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "layer_norm_with_affine": True,
        "mask_token_id": mask,
        "max_sequence_length": 4096,
        "mlp_hidden_size": ffn,
        "mlp_ratio": 4,
        "model_type": "llada",
        "multi_query_attention": None,
        "n_heads": heads,
        "n_kv_heads": kv_heads,
        "n_layers": layers,
        "pad_token_id": eos,
        "precision": "amp_bf16",
        "residual_dropout": 0.0,
        "rms_norm_eps": 1e-05,
        "rope": True,
        "rope_full_precision": True,
        "rope_theta": 500000.0,
        "scale_logits": False,
        "torch_dtype": torch_dtype,
        "transformers_version": "4.46.3",
        "use_cache": False,
        "vocab_size": vocab,
        "weight_tying": False,
    }


def write_llada_tokenizer_files(out_dir, eos, added_decoder):
    """generation_config.json, special_tokens_map.json, tokenizer_config.json of LLaDA; returns
    the special tokens map."""
    dump_json(os.path.join(out_dir, "generation_config.json"),
              {"_from_model_config": True, "eos_token_id": eos, "pad_token_id": eos,
               "transformers_version": "4.46.3", "use_cache": False})
    special_map = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    dump_json(os.path.join(out_dir, "special_tokens_map.json"), special_map)
    dump_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "added_tokens_decoder": added_decoder,
        "bos_token": "<|startoftext|>",
        "chat_template": LLADA_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "extra_special_tokens": {},
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
    })
    return special_map


# Tokens the LLaDA / Dream tokenizer_config.json and chat templates name (besides the ids in
# config.json); `make-random` warns when the given tokenizer lacks one.
LLADA_TEMPLATE_TOKENS = ["<|startoftext|>", "<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
DREAM_ADDITIONAL = ["<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
                    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
                    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
DREAM_TEMPLATE_TOKENS = ["<|beginoftext|>", "<|endoftext|>", "<|mask|>"] + DREAM_ADDITIONAL


def make_llada(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    specials = [
        ("<|startoftext|>", True),
        ("<|endoftext|>", True),
        ("<|mdm_mask|>", True),
        ("<|start_header_id|>", True),
        ("<|end_header_id|>", True),
        ("<|eot_id|>", True),
    ]
    tok = train_tokenizer(420, specials)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    tid = tok.token_to_id
    vocab = round_up(tok.get_vocab_size(with_added_tokens=True))
    bos, eos, mask = tid("<|startoftext|>"), tid("<|endoftext|>"), tid("<|mdm_mask|>")
    cfg = llada_config(vocab, eos, mask, hidden=32, layers=2, heads=4, kv_heads=4, ffn=48)
    dump_json(os.path.join(out_dir, "config.json"), cfg)
    special_map = write_llada_tokenizer_files(out_dir, eos, added_tokens_decoder(tok, specials))

    torch.manual_seed(0)
    model = LLaDA(cfg)
    init_weights(model, seed=1234, bias_std=0.0)
    write_sharded(model, out_dir, lambda k: k.startswith("model.transformer.wte") or ".blocks.0." in k)

    row0 = [bos] + ids_of(tok, "The quick brown fox jumps")
    row0 = (row0 + [mask] * 12)[:12]
    row0[-6:] = [mask] * 6
    row1 = ids_of(tok, "Give me a JSON object with a name and an age.")[:12]
    row1 = (row1 + [eos] * 12)[:12]
    for i in (1, 3, 4, 7, 10):
        row1[i] = mask
    input_ids = torch.tensor([row0, row1], dtype=torch.int64)
    logits = write_reference(out_dir, input_ids)
    write_chat_reference(out_dir, tok, LLADA_CHAT_TEMPLATE, special_map)
    return cfg, input_ids, logits


def dream_config(vocab, eot, mask, hidden, layers, heads, kv_heads, ffn, torch_dtype="bfloat16"):
    """config.json of `Dream-org/Dream-v0-*-7B` (every field of the real one) with these sizes / ids."""
    return {
        "architectures": ["DreamModel"],
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_dream.DreamConfig",
            "AutoModel": "modeling_dream.DreamModel",
        },
        "bos_token_id": eot,
        "eos_token_id": eot,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": ffn,
        "mask_token_id": mask,
        "max_position_embeddings": 131072,
        "max_window_layers": 28,
        "model_type": "Dream",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "pad_token_id": eot,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": torch_dtype,
        "transformers_version": "4.46.2",
        "use_cache": False,
        "use_sliding_window": False,
        "vocab_size": vocab,
    }


def write_dream_tokenizer_files(out_dir, tok, eot, added_decoder):
    """vocab.json + merges.txt (the real snapshot ships the slow DreamTokenizer files too; written
    when the tokenizer is a BPE), generation_config.json, special_tokens_map.json,
    tokenizer_config.json of Dream; returns the special tokens map."""
    bpe = json.loads(tok.to_str())["model"]
    if bpe.get("type") == "BPE":
        dump_json(os.path.join(out_dir, "vocab.json"), bpe["vocab"])
        with open(os.path.join(out_dir, "merges.txt"), "w") as f:
            f.write("#version: 0.2\n")
            for m in bpe["merges"]:
                f.write((m if isinstance(m, str) else " ".join(m)) + "\n")
    dump_json(os.path.join(out_dir, "generation_config.json"), {
        "_from_model_config": True, "alg": "origin", "alg_temp": None, "bos_token_id": eot,
        "eos_token_id": eot, "eps": 0.001, "mask_token_id": None, "output_history": False,
        "pad_token_id": eot, "steps": 512, "temperature": 0.0, "top_k": None, "top_p": None,
        "transformers_version": "4.46.2"})
    additional = list(DREAM_ADDITIONAL)
    special_map = {"bos_token": "<|beginoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                   "mask_token": "<|mask|>", "additional_special_tokens": additional}
    dump_json(os.path.join(out_dir, "special_tokens_map.json"), special_map)
    dump_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "add_prefix_space": False,
        "added_tokens_decoder": added_decoder,
        "additional_special_tokens": additional,
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "bos_token": "<|beginoftext|>",
        "chat_template": DREAM_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "mask_token": "<|mask|>",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "DreamTokenizer",
        "unk_token": None,
    })
    return special_map


def make_dream(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    # Qwen2.5 added tokens 151643..151664 in order, then Dream's 151665 / 151666.
    specials = [(t, True) for t in [
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
        "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
        "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]]
    specials += [("<tool_call>", False), ("</tool_call>", False)]
    specials += [(t, False) for t in [
        "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]]
    specials += [("<|beginoftext|>", True), ("<|mask|>", True)]
    tok = train_tokenizer(440, specials)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    tid = tok.token_to_id
    vocab = round_up(tok.get_vocab_size(with_added_tokens=True))
    eot, mask = tid("<|endoftext|>"), tid("<|mask|>")
    cfg = dream_config(vocab, eot, mask, hidden=32, layers=2, heads=4, kv_heads=2, ffn=48)
    dump_json(os.path.join(out_dir, "config.json"), cfg)
    special_map = write_dream_tokenizer_files(out_dir, tok, eot, added_tokens_decoder(tok, specials))

    torch.manual_seed(0)
    model = Dream(cfg)
    init_weights(model, seed=4321, bias_std=0.1)
    write_sharded(model, out_dir, lambda k: k.startswith("model.embed_tokens") or ".layers.0." in k)

    im_start, im_end = tid("<|im_start|>"), tid("<|im_end|>")
    row0 = [im_start] + ids_of(tok, "user\nHello, world! How are")
    row0 = (row0 + [mask] * 12)[:12]
    row0[-5:] = [mask] * 5
    row1 = ids_of(tok, '{"name": "Alice", "age": 42, "city": "Paris"}')[:12]
    row1 = (row1 + [im_end] * 12)[:12]
    for i in (2, 3, 6, 8, 9, 11):
        row1[i] = mask
    input_ids = torch.tensor([row0, row1], dtype=torch.int64)
    logits = write_reference(out_dir, input_ids)
    write_chat_reference(out_dir, tok, DREAM_CHAT_TEMPLATE, special_map)
    return cfg, input_ids, logits


def cmd_make_fixtures(out_root):
    torch.use_deterministic_algorithms(True)
    for name, fn in (("llada-tiny", make_llada), ("dream-tiny", make_dream)):
        d = os.path.join(out_root, name)
        cfg, ids, logits = fn(d)
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        print(f"{d}: vocab {cfg['vocab_size']}, input_ids {ids.tolist()}, logits {tuple(logits.shape)} "
              f"|max| {logits.abs().max():.4f}, {size} bytes")


# ----------------------------------------------------------------------------------------------
# make-random: random weights at any size, real layout, a given tokenizer
# ----------------------------------------------------------------------------------------------


def param_specs(cfg):
    """[(name, shape)] in `named_parameters()` order (the order `init_weights` draws in), from
    the module built on the meta device: no memory, no init."""
    with torch.device("meta"):
        model = build(cfg)
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]


def shard_of(name, n_layers, n_shards):
    """Layers split in `n_shards` contiguous runs (the first n_layers % n_shards one longer);
    embeddings in the first shard, final norm and output head in the last. Two shards of a
    two-layer model: embeddings + layer 0 | layer 1 + norm + head, as the fixtures."""
    for key in (".blocks.", ".layers."):
        if key in name:
            i = int(name.split(key, 1)[1].split(".", 1)[0])
            base, extra = divmod(n_layers, n_shards)
            # first `extra` shards hold base + 1 layers
            if i < extra * (base + 1):
                return i // (base + 1)
            return extra + (i - extra * (base + 1)) // base
    if "wte" in name or "embed_tokens" in name:
        return 0
    return n_shards - 1


def write_random_weights(cfg, out_dir, seed, bias_std, dtype, n_shards):
    """Draws every tensor with `init_value` (same generator stream as `init_weights` on the
    module), converts it to `dtype` at once and writes each shard as soon as it is complete:
    peak memory is one shard plus one float32 tensor. `n_shards` 1 writes `model.safetensors`
    (no index), as transformers does for a single file."""
    specs = param_specs(cfg)
    n_layers = cfg.get("n_layers", cfg.get("num_hidden_layers"))
    names = (["model.safetensors"] if n_shards == 1 else
             [f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors" for i in range(n_shards)])
    g = torch.Generator().manual_seed(seed)
    weight_map, total, params = {}, 0, 0
    cur, cur_idx = {}, 0

    def flush():
        save_file(cur, os.path.join(out_dir, names[cur_idx]), metadata={"format": "pt"})
        weight_map.update({k: names[cur_idx] for k in cur})

    for name, shape in specs:
        s = shard_of(name, n_layers, n_shards)
        assert s >= cur_idx, (name, s, cur_idx)
        while s > cur_idx:
            flush()
            cur, cur_idx = {}, cur_idx + 1
        x = init_value(name, shape, g, bias_std)
        t = x if dtype == torch.float32 else x.to(dtype)
        del x
        cur[name] = t.contiguous()
        total += t.numel() * t.element_size()
        params += t.numel()
    flush()
    del cur
    assert set(weight_map.values()) == set(names), "a shard came out empty"
    if n_shards > 1:
        dump_json(
            os.path.join(out_dir, "model.safetensors.index.json"),
            {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
        )
    return params, total


def cmd_make_random(a):
    from tokenizers import Tokenizer

    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    if a.hidden % a.heads or a.heads % a.kv_heads or (a.hidden // a.heads) % 2:
        raise SystemExit(f"--hidden {a.hidden} / --heads {a.heads} / --kv-heads {a.kv_heads}: need hidden "
                         "divisible by heads, heads by kv-heads, and an even head dim (RoPE)")
    if not 1 <= a.shards <= max(a.layers, 1):
        raise SystemExit(f"--shards {a.shards}: need 1 <= shards <= layers ({a.layers})")
    tok = Tokenizer.from_file(a.tokenizer)
    ids = tok.get_vocab(with_added_tokens=True)
    n_ids = max(tok.get_vocab_size(with_added_tokens=True), max(ids.values()) + 1)
    vocab = a.vocab if a.vocab is not None else round_up(n_ids)
    if vocab < n_ids:
        raise SystemExit(f"--vocab {vocab} < {n_ids}: the tokenizer {a.tokenizer} has ids up to {n_ids - 1}")

    def need(text, role):
        i = tok.token_to_id(text)
        if i is None:
            raise SystemExit(f"{a.tokenizer}: no token {text!r} ({a.arch} {role}); a {a.arch} snapshot needs it")
        return i

    if a.arch == "llada":
        mask, eos, bos = need("<|mdm_mask|>", "mask_token_id"), need("<|endoftext|>", "eos/pad"), \
            need("<|startoftext|>", "bos_token")
        named = LLADA_TEMPLATE_TOKENS
    else:
        mask, eos = need("<|mask|>", "mask_token_id"), need("<|endoftext|>", "bos/eos/pad")
        bos = None
        named = DREAM_TEMPLATE_TOKENS
    missing = [t for t in named if tok.token_to_id(t) is None]
    if missing:
        print(f"warning: {a.tokenizer} lacks {missing}, which tokenizer_config.json / the chat template name; "
              "they are written as in the fixtures and would encode as plain text", file=sys.stderr)

    out = a.out_dir
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):  # stale files of an earlier run with another shard count
        if (f.startswith("model") and f.endswith(".safetensors")) or f in (
                "model.safetensors.index.json", "reference.safetensors", "chat_reference.json",
                "vocab.json", "merges.txt"):
            os.remove(os.path.join(out, f))
    with open(a.tokenizer, "rb") as src, open(os.path.join(out, "tokenizer.json"), "wb") as dst:
        dst.write(src.read())
    # added_tokens_decoder mirrors tokenizer.json's added tokens, as transformers writes it.
    added = {str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized, "rstrip": t.rstrip,
                      "single_word": t.single_word, "special": t.special}
             for i, t in sorted(tok.get_added_tokens_decoder().items())}
    torch_dtype = {"bf16": "bfloat16", "f32": "float32"}[a.dtype]
    sizes = dict(hidden=a.hidden, layers=a.layers, heads=a.heads, kv_heads=a.kv_heads, ffn=a.ffn,
                 torch_dtype=torch_dtype)
    if a.arch == "llada":
        cfg = llada_config(vocab, eos, mask, **sizes)
        special_map = write_llada_tokenizer_files(out, eos, added)
        template, seed, bias_std = LLADA_CHAT_TEMPLATE, 1234, 0.0
    else:
        cfg = dream_config(vocab, eos, mask, **sizes)
        special_map = write_dream_tokenizer_files(out, tok, eos, added)
        template, seed, bias_std = DREAM_CHAT_TEMPLATE, 4321, 0.1
    if a.seed is not None:
        seed = a.seed
    dump_json(os.path.join(out, "config.json"), cfg)
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[a.dtype]
    params, total = write_random_weights(cfg, out, seed, bias_std, dtype, a.shards)
    t1 = time.perf_counter()
    print(f"{out}: {a.arch}, vocab {vocab} (tokenizer {n_ids} ids), mask {mask}, eos {eos}"
          + (f", bos {bos}" if bos is not None else "")
          + f", hidden {a.hidden}, layers {a.layers}, heads {a.heads}/{a.kv_heads}, ffn {a.ffn}, seed {seed}, "
          f"{params} params, {total} bytes {a.dtype} in {a.shards} shard(s), {t1 - t0:.1f} s")
    if a.reference:
        prefix = [bos] if bos is not None else []
        row = prefix + ids_of(tok, "The quick brown fox jumps over the lazy dog.")
        row = (row + [mask] * 16)[:16]
        row[-6:] = [mask] * 6
        row[3] = mask
        logits = write_reference(out, torch.tensor([row], dtype=torch.int64))
        write_chat_reference(out, tok, template, special_map)
        print(f"  reference.safetensors: input_ids {row}, logits {tuple(logits.shape)} "
              f"|max| {logits.abs().max():.4f}; chat_reference.json; {time.perf_counter() - t1:.1f} s")


# ----------------------------------------------------------------------------------------------
# check / time
# ----------------------------------------------------------------------------------------------


def numpy_forward(cfg, state, ids):
    """Second, independent path: float64 numpy, explicit softmax, per-head loops, the RoPE
    rotate-half written as LLaDA's `x.view(B, nh, T, 2, hs // 2)` split. No torch modules."""
    import numpy as np

    W = {k: v.double().numpy() for k, v in state.items()}
    ids = ids.numpy()
    llada = cfg["model_type"] == "llada"
    if llada:
        d, H, L_ = cfg["d_model"], cfg["n_heads"], cfg["n_layers"]
        KV, eps = cfg.get("n_kv_heads") or H, cfg["rms_norm_eps"]
        emb, pre = W["model.transformer.wte.weight"], "model.transformer.blocks."
    else:
        d, H, L_ = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
        KV, eps = cfg["num_key_value_heads"], cfg["rms_norm_eps"]
        emb, pre = W["model.embed_tokens.weight"], "model.layers."
    hd, theta = d // H, float(cfg["rope_theta"])
    B, T = ids.shape

    def rms(x, w):
        return w * (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps))

    def lin(x, name, bias=None):
        y = x @ W[name].T
        return y + W[bias] if bias is not None and bias in W else y

    inv = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.concatenate([np.outer(np.arange(T), inv)] * 2, axis=-1)  # [T, hd]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(x):  # x [T, hd]
        x1, x2 = x.reshape(T, 2, hd // 2)[:, 0], x.reshape(T, 2, hd // 2)[:, 1]
        return x * cos + np.concatenate([-x2, x1], axis=-1) * sin

    x = emb[ids]
    for i in range(L_):
        p = f"{pre}{i}."
        if llada:
            n = rms(x, W[p + "attn_norm.weight"])
            q, k, v = lin(n, p + "q_proj.weight"), lin(n, p + "k_proj.weight"), lin(n, p + "v_proj.weight")
        else:
            n = rms(x, W[p + "input_layernorm.weight"])
            a = p + "self_attn."
            q = lin(n, a + "q_proj.weight", a + "q_proj.bias")
            k = lin(n, a + "k_proj.weight", a + "k_proj.bias")
            v = lin(n, a + "v_proj.weight", a + "v_proj.bias")
        out = np.zeros((B, T, H * hd))
        for b in range(B):
            for h in range(H):
                g = h // (H // KV)
                qh = rope(q[b, :, h * hd:(h + 1) * hd])
                kh = rope(k[b, :, g * hd:(g + 1) * hd])
                s = qh @ kh.T / math.sqrt(hd)
                s = np.exp(s - s.max(-1, keepdims=True))
                out[b, :, h * hd:(h + 1) * hd] = (s / s.sum(-1, keepdims=True)) @ v[b, :, g * hd:(g + 1) * hd]
        if llada:
            x = x + lin(out, p + "attn_out.weight")
            m = rms(x, W[p + "ff_norm.weight"])
            gt, up, dn = p + "ff_proj.weight", p + "up_proj.weight", p + "ff_out.weight"
        else:
            x = x + lin(out, a + "o_proj.weight")
            m = rms(x, W[p + "post_attention_layernorm.weight"])
            gt, up, dn = p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight", p + "mlp.down_proj.weight"
        gg = lin(m, gt)
        x = x + lin(gg / (1.0 + np.exp(-gg)) * lin(m, up), dn)
    if llada:
        x = rms(x, W["model.transformer.ln_f.weight"])
        head = W["model.transformer.wte.weight"] if cfg.get("weight_tying") else W["model.transformer.ff_out.weight"]
    else:
        x = rms(x, W["model.norm.weight"])
        head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    return torch.from_numpy(x @ head.T)


def cmd_check(snapshot, with_numpy=True):
    cfg, model = load_snapshot(snapshot)
    ref = load_file(os.path.join(snapshot, "reference.safetensors"))
    with torch.no_grad():
        got = model(ref["input_ids"]).to(torch.float32)
    want = ref["logits"]
    err = (got - want).abs().max().item()
    scale = max(want.abs().max().item(), 1e-30)
    agree = (got.argmax(-1) == want.argmax(-1)).float().mean().item()
    print(f"{snapshot}: model_type {cfg['model_type']}, logits {tuple(want.shape)}, "
          f"max abs err {err:.3e}, max rel err {err / scale:.3e} (|max logit| {scale:.4f}), "
          f"argmax agreement {agree:.3f}")
    worst = err / scale
    if with_numpy:
        ref64 = numpy_forward(cfg, load_state(snapshot), ref["input_ids"])
        err64 = (ref64 - want.double()).abs().max().item()
        agree64 = (ref64.argmax(-1) == want.argmax(-1)).double().mean().item()
        print(f"  independent float64 numpy path vs stored logits: max abs err {err64:.3e}, "
              f"max rel err {err64 / scale:.3e}, argmax agreement {agree64:.3f}")
        worst = max(worst, err64 / scale)
    return worst


# Real sizes of the two 7-8B models (config.json of GSAI-ML/LLaDA-8B-* and Dream-org/Dream-v0-*-7B).
TIME_PRESETS = {
    "llada-8b": dict(arch="llada", hidden=4096, layers=32, heads=32, kv_heads=32, ffn=12288, vocab=126464,
                     rope_theta=500000.0, eps=1e-5),
    "dream-7b": dict(arch="dream", hidden=3584, layers=28, heads=28, kv_heads=4, ffn=18944, vocab=152064,
                     rope_theta=1000000.0, eps=1e-6),
}
TIME_DEFAULTS = {"llada": dict(rope_theta=500000.0, eps=1e-5), "dream": dict(rope_theta=1000000.0, eps=1e-6)}
TIME_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def time_sizes(a):
    """--preset fills every size; an explicit flag overrides it; without a preset the sizes are
    required (rope_theta / eps default to the real model's)."""
    keys = ("arch", "hidden", "layers", "heads", "kv_heads", "ffn", "vocab", "rope_theta", "eps")
    z = dict(TIME_PRESETS[a.preset]) if a.preset else {}
    if a.preset and a.arch is not None and a.arch != z["arch"]:
        raise SystemExit(f"--arch {a.arch} contradicts --preset {a.preset} ({z['arch']})")
    for k in keys:
        if getattr(a, k) is not None:
            z[k] = getattr(a, k)
    if "arch" in z:
        for k, v in TIME_DEFAULTS[z["arch"]].items():
            z.setdefault(k, v)
    missing = ["--" + k.replace("_", "-") for k in keys if k not in z]
    if missing:
        raise SystemExit(f"time: missing {' '.join(missing)} (or pass --preset llada-8b|dream-7b)")
    if z["hidden"] % z["heads"] or z["heads"] % z["kv_heads"] or (z["hidden"] // z["heads"]) % 2:
        raise SystemExit(f"--hidden {z['hidden']} / --heads {z['heads']} / --kv-heads {z['kv_heads']}: need hidden "
                         "divisible by heads, heads by kv-heads, and an even head dim (RoPE)")
    if (a.seq is None) == (a.seqs is None):
        raise SystemExit("time: pass exactly one of --seq N / --seqs N,N,...")
    try:
        seqs = [a.seq] if a.seq is not None else [int(x) for x in a.seqs.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--seqs {a.seqs!r}: want comma-separated integers, e.g. 128,256,512")
    if not seqs or min(seqs) < 1:
        raise SystemExit(f"time: bad sequence lengths {seqs}")
    return z, seqs


def build_random_on(cfg, device, dtype, std=0.02):
    """The module built on `meta` (no memory), cast to `dtype` there, then `to_empty` on `device`:
    each parameter is allocated once, directly on the device in its final dtype (no float32 copy,
    nothing on the host for CUDA). In-place init: RMSNorm weights 1, every other parameter
    (embeddings, projections, Dream's q/k/v biases, head) N(0, std), drawn on the device."""
    with torch.device("meta"):
        model = build(cfg)
    model = model.to(dtype).to_empty(device=device).eval()
    with torch.no_grad():
        for m in model.modules():
            for name, p in m.named_parameters(recurse=False):
                if isinstance(m, RMSNorm):
                    p.fill_(1.0)
                else:
                    p.normal_(0.0, std)
    return model


def host_peak_rss_mib():
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def cmd_time(a):
    z, seqs = time_sizes(a)
    dtype = TIME_DTYPES[a.dtype]
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False "
                         f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)  # seeds the CUDA generators as well
    if z["arch"] == "llada":
        cfg = {"model_type": "llada", "d_model": z["hidden"], "n_layers": z["layers"], "n_heads": z["heads"],
               "n_kv_heads": z["kv_heads"], "mlp_hidden_size": z["ffn"], "vocab_size": z["vocab"],
               "embedding_size": z["vocab"], "rms_norm_eps": z["eps"], "rope_theta": z["rope_theta"],
               "weight_tying": False}
    else:
        cfg = {"model_type": "Dream", "hidden_size": z["hidden"], "num_hidden_layers": z["layers"],
               "num_attention_heads": z["heads"], "num_key_value_heads": z["kv_heads"],
               "intermediate_size": z["ffn"], "vocab_size": z["vocab"], "rms_norm_eps": z["eps"],
               "rope_theta": z["rope_theta"], "tie_word_embeddings": False}
    t0 = time.perf_counter()
    model = build_random_on(cfg, dev, dtype)
    if cuda:
        torch.cuda.synchronize(dev)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    base = {"impl": "pytorch", "arch": z["arch"], "preset": a.preset, "device": a.device, "dtype": a.dtype,
            "hidden": z["hidden"], "layers": z["layers"], "heads": z["heads"], "kv_heads": z["kv_heads"],
            "ffn": z["ffn"], "vocab": z["vocab"], "rope_theta": z["rope_theta"], "eps": z["eps"],
            "params": n_params, "weights_mib": round(weight_bytes / 2**20, 1), "build_s": round(build_s, 2),
            "batch": a.batch, "threads": a.threads, "warmup": a.warmup, "reps": a.reps,
            "torch": torch.__version__}
    if cuda:
        base.update(gpu=torch.cuda.get_device_name(dev), cuda=torch.version.cuda,
                    float32_matmul_precision=torch.get_float32_matmul_precision())

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    for seq in seqs:
        out = dict(base, seq=seq)
        ids = torch.randint(0, z["vocab"], (a.batch, seq), device=dev)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        times = []
        try:
            with torch.inference_mode():
                for _ in range(a.warmup):
                    model(ids)
                sync()
                for _ in range(a.reps):
                    sync()
                    t1 = time.perf_counter()
                    model(ids)
                    sync()
                    times.append((time.perf_counter() - t1) * 1e3)
        except torch.OutOfMemoryError as e:  # report it and go on with the next length
            out["error"] = f"out of memory: {str(e).splitlines()[0]}"
            times = []
        if times:
            out.update(min_ms=round(min(times), 3), median_ms=round(statistics.median(times), 3),
                       times_ms=[round(t, 3) for t in times])
        if cuda:
            out.update(peak_mem_mib=round(torch.cuda.max_memory_allocated(dev) / 2**20, 1),
                       peak_reserved_mib=round(torch.cuda.max_memory_reserved(dev) / 2**20, 1))
        # host process high-water mark so far (monotonic over the lengths; includes the weights on CPU)
        out["host_peak_rss_mib"] = host_peak_rss_mib()
        print(json.dumps(out), flush=True)
        del ids


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    mf = sub.add_parser("make-fixtures")
    mf.add_argument("out_dir")
    mr = sub.add_parser("make-random", help="random weights, real layout, a given tokenizer.json")
    mr.add_argument("out_dir")
    mr.add_argument("--arch", choices=["llada", "dream"], required=True)
    mr.add_argument("--tokenizer", required=True, help="tokenizer.json to copy and look the special ids up in")
    for name in ("hidden", "layers", "heads", "kv-heads", "ffn"):
        mr.add_argument(f"--{name}", type=int, required=True)
    mr.add_argument("--vocab", type=int, default=None,
                    help="vocab_size (LLaDA: and embedding_size); default tokenizer size rounded up to 128")
    mr.add_argument("--seed", type=int, default=None, help="init seed (default as the fixtures: 1234 / 4321)")
    mr.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    mr.add_argument("--shards", type=int, default=2)
    mr.add_argument("--reference", action="store_true",
                    help="also write reference.safetensors (input_ids [1, 16], float32 logits) and chat_reference.json")
    ck = sub.add_parser("check")
    ck.add_argument("snapshot", nargs="+")
    ck.add_argument("--tol", type=float, default=1e-5, help="max relative error before exiting 1")
    ck.add_argument("--no-numpy", action="store_true", help="skip the float64 numpy cross-check (slow on 7B)")
    tm = sub.add_parser("time", help="forward-pass time of a random-weight model (CPU or CUDA)")
    tm.add_argument("--preset", choices=sorted(TIME_PRESETS), default=None,
                    help="the real sizes (LLaDA-8B / Dream-7B); explicit size flags override them")
    tm.add_argument("--arch", choices=["llada", "dream"], default=None, help="required without --preset")
    for name in ("hidden", "layers", "heads", "kv-heads", "ffn", "vocab"):
        tm.add_argument(f"--{name}", type=int, default=None, help="required without --preset")
    tm.add_argument("--rope-theta", type=float, default=None, help="default: the real model's")
    tm.add_argument("--eps", type=float, default=None, help="RMSNorm eps; default: the real model's")
    tm.add_argument("--seq", type=int, default=None, help="one sequence length")
    tm.add_argument("--seqs", default=None, help="comma-separated lengths, one model build: 128,256,512")
    tm.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    tm.add_argument("--dtype", choices=sorted(TIME_DTYPES), default="f32")
    tm.add_argument("--batch", type=int, default=1)
    tm.add_argument("--threads", type=int, default=1)
    tm.add_argument("--reps", type=int, default=5)
    tm.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    if a.cmd == "make-fixtures":
        cmd_make_fixtures(a.out_dir)
    elif a.cmd == "make-random":
        cmd_make_random(a)
    elif a.cmd == "check":
        worst = max(cmd_check(s, not a.no_numpy) for s in a.snapshot)
        sys.exit(0 if worst <= a.tol else 1)
    else:
        cmd_time(a)


if __name__ == "__main__":
    main()
