#!/usr/bin/env python3
"""PyTorch (eager, CPU) reference of the masked-diffusion denoiser, for speed comparisons.

It builds the same network as `src/masked/model.rs` with the same tensor names, so it loads the
shipped `model.safetensors` with `strict=True`:

    ids [B, L] (MASK = vocab_size) -> token_embedding + position_embedding[:L]
        -> blocks.0..N (pre-LN, bidirectional attention, ReLU feed-forward)
        -> final_norm -> x @ token_embedding.weight[:V].T + lm_head.bias -> logits [B, L, V]

The embedding table has V + 1 rows; the last one is `[MASK]` (`MaskedConfig::mask_id()` is
`vocab_size`), an input only: the output layer is tied to rows 0..V.

It then

- optionally (`--dump FILE`) checks the logits the Rust code wrote: a safetensors file with
  `ids` (int64 / int32 / uint32, [B, L]) and `logits` (f32, [B, L, V]); it prints the largest
  absolute difference relative to the largest |logit| and exits non-zero above 1e-3;
- times one forward pass on an all-`[MASK]` input (the first sampling step) at batch 1 and 64,
  under `torch.no_grad()` and under `torch.inference_mode()`, as `benches/masked.rs`
  (`masked_forward/{1,64}`) times the Rust one;
- times the unconstrained step's post-processing at batch 1: `log_softmax` over the vocabulary
  (what `MaskedGenerator::run_batch` does to the logits), and, for reference, that plus the
  per-position softmax and one draw per position (`independent` in `src/masked/sample.rs`).

    python3 benches/pytorch_masked_reference.py --model models/e2e-masked [--threads 2]
        [--dump rust_masked_io.safetensors] [--out pytorch_masked.json] [--quick]

Every figure is the mean over repeated calls after warm-up (`time.perf_counter` around the whole
loop), as in `benches/pytorch_reference.py`.
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

import sys

# The blocks are the continuous reference's (same `nn::Block`, same tensor names).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_reference import Bias, Block  # noqa: E402


class MaskedDenoiser(nn.Module):
    """Same layout and tensor names as `src/masked/model.rs`."""

    def __init__(self, cfg):
        super().__init__()
        assert cfg["model_type"] == "masked-lm", cfg["model_type"]
        v, h, l = cfg["vocab_size"], cfg["hidden"], cfg["seq_len"]
        self.cfg = cfg
        self.token_embedding = nn.Embedding(v + 1, h)  # row v is [MASK]
        self.lm_head = Bias(v)
        self.position_embedding = nn.Embedding(l, h)
        self.drop = nn.Dropout(cfg["dropout"])
        self.blocks = nn.ModuleList(
            Block(h, cfg["heads"], cfg["ffn_hidden"], cfg["dropout"]) for _ in range(cfg["layers"])
        )
        self.final_norm = nn.LayerNorm(h, eps=1e-5)

    @property
    def mask_id(self):
        return self.cfg["vocab_size"]

    def forward(self, ids):
        l = ids.shape[1]
        assert l <= self.cfg["seq_len"], f"sequence length {l} exceeds {self.cfg['seq_len']}"
        x = self.drop(self.token_embedding(ids) + self.position_embedding.weight[:l])
        for block in self.blocks:
            x = block(x)
        out = self.token_embedding.weight[: self.cfg["vocab_size"]]
        return F.linear(self.final_norm(x), out, self.lm_head.bias)


def load(model_dir):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    model = MaskedDenoiser(cfg)
    model.load_state_dict(load_file(os.path.join(model_dir, "model.safetensors")), strict=True)
    return cfg, model.eval()


def timed(warm, reps, f):
    for _ in range(warm):
        f()
    t0 = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t0) / reps


def check_against_rust(model, path, results):
    """The Rust logits (`ids`, `logits` in a safetensors file) against this model's."""
    io = load_file(path)
    ids = io["ids"].to(torch.int64)
    with torch.inference_mode():
        ours = model(ids)
    theirs = io["logits"].to(torch.float32)
    assert ours.shape == theirs.shape, f"shapes differ: torch {tuple(ours.shape)}, rust {tuple(theirs.shape)}"
    diff = (ours - theirs).abs().max().item()
    scale = max(theirs.abs().max().item(), 1e-12)
    ok = diff / scale <= 1e-3
    print(f"  same logits as the Rust code on {tuple(ids.shape)} ids: max |diff| {diff:.3e} "
          f"(relative to max |logit| {scale:.3e}: {diff / scale:.3e}) {'ok' if ok else 'FAIL'}", flush=True)
    results["parity with rust"] = {"max_abs": diff, "relative": diff / scale, "ok": ok}
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/e2e-masked")
    p.add_argument("--dump", help="ids and the Rust logits (safetensors) to check parity against")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads), default 2")
    p.add_argument("--out", help="write the figures as JSON here")
    p.add_argument("--quick", action="store_true", help="few repetitions (a smoke test)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg, model = load(args.model)
    n_params = sum(t.numel() for t in model.state_dict().values())
    results = {
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "model": args.model,
        "parameters": n_params,
    }
    print(f"PyTorch {torch.__version__} eager, CPU, {torch.get_num_threads()} threads; "
          f"{args.model}: {n_params} parameters, mask id {model.mask_id}", flush=True)
    ok = True
    if args.dump:
        ok = check_against_rust(model, args.dump, results)

    def record(name, secs, extra=None):
        results[name] = {"ms": secs * 1e3, **({"extra": extra} if extra else {})}
        print(f"  {name:<58} {secs * 1e3:>10.3f} ms  {json.dumps(extra) if extra else ''}", flush=True)

    l, v = cfg["seq_len"], cfg["vocab_size"]
    for batch in (1, 64):
        ids = torch.full((batch, l), model.mask_id, dtype=torch.int64)
        reps = 2 if args.quick else (200 if batch == 1 else 20)
        warm = 1 if args.quick else 5
        for ctx_name, ctx in (("no_grad", torch.no_grad), ("inference_mode", torch.inference_mode)):
            with ctx():
                secs = timed(warm, reps, lambda: model(ids))
            record(f"masked forward batch {batch} ({ctx_name})", secs,
                   {"tokens_per_s": round(batch * l / secs), "reps": reps})

    # The unconstrained step after the forward pass, batch 1.
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        logits = model(torch.full((1, l), model.mask_id, dtype=torch.int64))

        def post_process():
            logp = torch.log_softmax(logits, dim=-1)
            probs = torch.softmax(logp[0], dim=-1)  # temperature 1
            # Inverse-CDF draw, as the Rust loop does (torch.multinomial takes ~3 ms here).
            u = torch.rand((probs.shape[0], 1), generator=gen)
            return torch.searchsorted(probs.cumsum(-1), u).clamp_(max=v - 1)

        reps = 5 if args.quick else 1000
        record(f"log_softmax over {v} tokens, batch 1 x {l} positions",
               timed(10, reps, lambda: torch.log_softmax(logits, dim=-1)))
        record("log_softmax + softmax + one draw per position, batch 1", timed(10, reps, post_process))

    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.out}", flush=True)
    if not ok:
        raise SystemExit("the PyTorch model disagrees with the Rust one")


if __name__ == "__main__":
    main()
