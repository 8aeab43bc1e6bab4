#!/usr/bin/env python3
"""PyTorch (eager) reference of the diffusion-lm denoiser, for speed comparisons.

It builds the same network as `src/model.rs` (same tensor names, so it loads the same
`model.safetensors` with `strict=True`), checks its prediction against the one the Rust code wrote
(`examples/gpu_check.rs --dump FILE`), and times, on CUDA when present and on the CPU:

- one denoising step (denoiser forward + clamping + DDPM update) at batch 1, 64 and 256:
  f32, f32 with TF32 matmuls and bf16 on the GPU (the transformer in bf16, embeddings and
  clamping in f32, as `DiffusionLm::set_compute_dtype` does), plus a variant whose attention
  uses `F.scaled_dot_product_attention`;
- one training step at batch 64 (the Diffusion-LM loss, backward, gradient clipping at 1.0,
  `torch.optim.AdamW`, EMA update with foreach ops);
- a 64-token, 200-step generation at batch 1 and 256 (samples/s); on the CPU the batch-256 run
  uses 20 steps and is scaled to 200, as the Rust check does.

    python3 benches/pytorch_reference.py --model models/e2e [--dump rust_io.safetensors]
        [--threads N] [--out pytorch.json] [--quick] [--short-cpu] [--gpu-only]

Every figure is the mean over repeated calls after warm-up, with the device synchronised before
the clock starts and after the last call, as in `examples/gpu_check.rs`.
"""
import argparse
import copy
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


def sqrt_alpha_bar(tau):
    return 1.0 - math.sqrt(tau + 1e-4)


class Schedule:
    """The `sqrt` schedule respaced to k steps, as `src/schedule.rs` computes it."""

    def __init__(self, total, k):
        betas = [min(1 - sqrt_alpha_bar((i + 1) / total) / sqrt_alpha_bar(i / total), 0.999) for i in range(total)]
        ac, acc = [], 1.0
        for b in betas:
            acc *= 1 - b
            ac.append(acc)
        stride = (total - 1) / (k - 1)
        keep = sorted(set(round(i * stride) for i in range(k)))
        self.alphas_cumprod = [ac[i] for i in keep]
        self.timesteps = keep
        last, self.betas = 1.0, []
        for a in self.alphas_cumprod:
            self.betas.append(1 - a / last)
            last = a

    def __len__(self):
        return len(self.betas)

    def posterior(self, i):
        ac = self.alphas_cumprod[i]
        ac_prev = self.alphas_cumprod[i - 1] if i > 0 else 1.0
        beta = self.betas[i]
        c0 = beta * math.sqrt(ac_prev) / (1 - ac)
        ct = (1 - ac_prev) * math.sqrt(1 - beta) / (1 - ac)
        var = beta * (1 - ac_prev) / (1 - ac)
        return c0, ct, var

    def ddpm_std(self, i):
        if i == 0:
            return 0.0
        return math.sqrt(self.betas[i])


class Attention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.heads = heads
        self.sdpa = False

    def forward(self, x):
        b, l, h = x.shape
        hd = h // self.heads
        q, k, v = self.qkv(x).reshape(b, l, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            probs = torch.softmax(q @ k.transpose(-1, -2) * (1.0 / math.sqrt(hd)), dim=-1)
            y = probs @ v
        return self.out(y.transpose(1, 2).reshape(b, l, h))


class Ffn(nn.Module):
    def __init__(self, hidden, ffn):
        super().__init__()
        self.fc1 = nn.Linear(hidden, ffn)
        self.fc2 = nn.Linear(ffn, hidden)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, hidden, heads, ffn, dropout):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, eps=1e-5)
        self.attn = Attention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-5)
        self.ffn = Ffn(hidden, ffn)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.ffn(self.norm2(x)))


class Bias(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n))


class Denoiser(nn.Module):
    """Same layout and tensor names as `src/model.rs`."""

    def __init__(self, cfg):
        super().__init__()
        v, d, h, f, l = cfg["vocab_size"], cfg["embed_dim"], cfg["hidden"], cfg["ffn_hidden"], cfg["seq_len"]
        self.cfg = cfg
        self.word_embedding = nn.Embedding(v, d)
        self.lm_head = Bias(v)
        self.input_up = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, h))
        self.time_embed = nn.Sequential(nn.Linear(h, 4 * h), nn.SiLU(), nn.Linear(4 * h, h))
        self.position_embedding = nn.Embedding(l, h)
        self.input_norm = nn.LayerNorm(h, eps=1e-5)
        self.drop = nn.Dropout(cfg["dropout"])
        self.blocks = nn.ModuleList(Block(h, cfg["heads"], f, cfg["dropout"]) for _ in range(cfg["layers"]))
        self.final_norm = nn.LayerNorm(h, eps=1e-5)
        self.output_down = nn.Sequential(nn.Linear(h, h), nn.Tanh(), nn.Linear(h, d))
        self.compute_dtype = torch.float32

    def set_sdpa(self, on):
        for b in self.blocks:
            b.attn.sdpa = on

    def timestep_embedding(self, t):
        half = self.cfg["hidden"] // 2
        times = t.double() * 1000.0 / self.cfg["diffusion_steps"]
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64, device=t.device) / half)
        args = times[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(self.compute_dtype)

    def forward(self, x_t, t):
        out_dtype = x_t.dtype
        x_t = x_t.to(self.compute_dtype)
        l = x_t.shape[1]
        temb = self.time_embed(self.timestep_embedding(t))
        h = self.input_up(x_t) + self.position_embedding.weight[:l] + temb[:, None]
        h = self.drop(self.input_norm(h))
        for block in self.blocks:
            h = block(h)
        return self.output_down(self.final_norm(h)).to(out_dtype)

    def clamp(self, x):
        """Nearest word embedding per position: one matmul against cached norms."""
        e = self.word_embedding.weight
        b, l, d = x.shape
        dist = self.sq_norms - 2.0 * (x.reshape(b * l, d) @ e.t())
        ids = dist.argmin(dim=-1)
        return ids.reshape(b, l), e[ids].reshape(b, l, d)

    def refresh(self):
        self.sq_norms = (self.word_embedding.weight.detach() ** 2).sum(1)


def half_precision_copy(model, dtype):
    """The transformer in `dtype`; embeddings, rounding head and clamping stay f32."""
    m = copy.deepcopy(model)
    for name, module in m.named_children():
        if name not in ("word_embedding", "lm_head"):
            module.to(dtype)
    m.compute_dtype = dtype
    m.refresh()
    return m


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(dev, warm, reps, f):
    for _ in range(warm):
        f()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        f()
    sync(dev)
    return (time.perf_counter() - t0) / reps


def load(model_dir, dev):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    model = Denoiser(cfg)
    model.load_state_dict(load_file(os.path.join(model_dir, "model.safetensors")), strict=True)
    model.to(dev).eval()
    model.refresh()
    return cfg, model


def diffusion_loss(model, batch, sched_full, gen):
    """The loss of `src/train.rs`: MSE on x0 + rounding cross-entropy + prior term."""
    cfg = model.cfg
    b, l = batch.shape
    ac = sched_full
    emb = model.word_embedding(batch)
    std0 = math.sqrt(1 - ac[0])
    noise0 = torch.randn(emb.shape, device=batch.device, generator=gen)
    x_start = emb + noise0 * std0
    t = torch.randint(0, len(ac), (b,), device=batch.device, generator=gen)
    ac_t = ac_tensor(ac, batch.device)[t][:, None, None]
    noise = torch.randn(emb.shape, device=batch.device, generator=gen)
    x_t = x_start * ac_t.sqrt() + noise * (1 - ac_t).sqrt()
    pred = model(x_t, t)
    target = x_start - noise0 * (t == 0).float()[:, None, None] * std0
    mse = ((pred - target) ** 2).mean(dim=(1, 2)).mean()
    prior = ((x_start * math.sqrt(ac[-1])) ** 2).mean(dim=(1, 2)).mean()
    logits = x_start.reshape(b * l, -1) @ model.word_embedding.weight.t() + model.lm_head.bias
    rounding = F.cross_entropy(logits, batch.reshape(-1))
    return mse + prior + rounding


_AC = {}


def ac_tensor(ac, dev):
    key = (id(ac), str(dev))
    if key not in _AC:
        _AC[key] = torch.tensor(ac, dtype=torch.float32, device=dev)
    return _AC[key]


def full_alphas_cumprod(total):
    out, acc = [], 1.0
    for i in range(total):
        b = min(1 - sqrt_alpha_bar((i + 1) / total) / sqrt_alpha_bar(i / total), 0.999)
        acc *= 1 - b
        out.append(acc)
    return out


def generate(model, sched, batch, dev, gen):
    cfg = model.cfg
    x = torch.randn((batch, cfg["seq_len"], cfg["embed_dim"]), device=dev, generator=gen)
    with torch.no_grad():
        for i in reversed(range(len(sched))):
            t = torch.full((batch,), sched.timesteps[i], device=dev, dtype=torch.long)
            _, x0 = model.clamp(model(x, t))
            c0, ct, _ = sched.posterior(i)
            x = c0 * x0 + ct * x
            if i > 0:
                x = x + sched.ddpm_std(i) * torch.randn(x.shape, device=dev, generator=gen)
        return model.clamp(x)[0]


def run(args, dev, label, results):
    quick = args.quick
    on_gpu = dev.type == "cuda"
    cfg, model = load(args.model, dev)
    sched = Schedule(cfg["diffusion_steps"], 200)
    gen = torch.Generator(device=dev)
    gen.manual_seed(0)
    i = 100

    def record(name, secs, extra=None):
        key = f"{label} {name}"
        results[key] = {"ms": secs * 1e3, "extra": extra}
        print(f"  {key:<60} {secs * 1e3:>10.3f} ms  {json.dumps(extra) if extra else ''}", flush=True)

    print(f"timing on {label} (PyTorch {torch.__version__} eager)", flush=True)
    variants = [("f32", model, False, False)]
    if on_gpu:
        variants += [("tf32", model, True, False), ("f32 sdpa", model, False, True)]
        variants += [("bf16", half_precision_copy(model, torch.bfloat16), False, False)]
    for name, m, tf32, sdpa in variants:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        m.set_sdpa(sdpa)
        for batch in (1, 64, 256):
            x = torch.randn((batch, cfg["seq_len"], cfg["embed_dim"]), device=dev, generator=gen)
            noise = torch.randn(x.shape, device=dev, generator=gen)
            t = torch.full((batch,), sched.timesteps[i], device=dev, dtype=torch.long)
            c0, ct, _ = sched.posterior(i)
            std = sched.ddpm_std(i)

            def step():
                with torch.no_grad():
                    _, x0 = m.clamp(m(x, t))
                    return c0 * x0 + ct * x + std * noise

            reps = 2 if quick else (200 if on_gpu else max(3, min(20, 64 // batch)))
            record(f"denoising step {name} batch {batch}", timed(dev, 3, reps, step))
        m.set_sdpa(False)
    torch.backends.cuda.matmul.allow_tf32 = False

    # The parts of a batch-256 denoising step, each alone (f32, random weights of the model's
    # sizes), as examples/gpu_check.rs times them.
    torch.backends.cuda.matmul.allow_tf32 = False
    h, f = cfg["hidden"], cfg["ffn_hidden"]
    torch.manual_seed(3)
    block = Block(h, cfg["heads"], f, 0.0).to(dev).eval()
    xp = torch.randn((256, cfg["seq_len"], h), device=dev, generator=gen)
    x0p = torch.randn((256, cfg["seq_len"], cfg["embed_dim"]), device=dev, generator=gen)
    e = model.word_embedding.weight.detach()

    def nearest():
        d = model.sq_norms - 2.0 * (x0p.reshape(-1, x0p.shape[-1]) @ e.t())
        return d.argmin(dim=-1)

    def block_backward():
        xv = xp.clone().requires_grad_(True)
        block(xv).sum().backward()

    parts = [
        ("layer norm", lambda: block.norm1(xp)),
        ("attention", lambda: block.attn(xp)),
        ("feed-forward", lambda: block.ffn(xp)),
        ("block", lambda: block(xp)),
    ]
    reps = 2 if quick else (200 if on_gpu else 5)
    for name, fn in parts:
        with torch.no_grad():
            record(f"part, batch 256: {name}", timed(dev, 3, reps, fn))
    record("part, batch 256: block, forward and backward", timed(dev, 3, reps, block_backward))
    with torch.no_grad():
        record("part, batch 256: clamping (nearest tokens)", timed(dev, 3, reps, nearest))

    # The single operations inside those parts, as examples/gpu_check.rs times its own.
    heads = cfg["heads"]
    b, l, hd = 256, cfg["seq_len"], h // heads
    rows = b * l
    with torch.no_grad():
        x2 = torch.randn((rows, h), device=dev, generator=gen)
        w_qkv = torch.randn((3 * h, h), device=dev, generator=gen) * 0.05
        bias = torch.randn((3 * h,), device=dev, generator=gen)
        y2 = x2 @ w_qkv.t()
        hid = torch.randn((b, l, f), device=dev, generator=gen)
        xb = x2.reshape(b, l, h)
        q, k, v = y2.reshape(b, l, 3, heads, hd).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2)
        probs = torch.softmax(scores, dim=-1)
        att = probs @ v
        dots = x0p.reshape(rows, -1) @ e.t()
        kernels = [
            (f"linear {h} -> {3 * h}, product only", lambda: x2 @ w_qkv.t()),
            (f"linear {h} -> {3 * h} with bias (addmm)", lambda: F.linear(x2, w_qkv, bias)),
            (f"bias add [{rows}, {3 * h}]", lambda: y2 + bias),
            (f"scores q k^T [{b * heads}, {l}, {l}]", lambda: q @ k.transpose(-1, -2)),
            (f"softmax [{b}, {heads}, {l}, {l}]", lambda: torch.softmax(scores, dim=-1)),
            (f"probs v [{b * heads}, {l}, {hd}]", lambda: probs @ v),
            ("merge heads (transpose copy)", lambda: att.transpose(1, 2).reshape(b, l, h)),
            (f"residual add [{b}, {l}, {h}]", lambda: xb + xb),
            (f"relu [{b}, {l}, {f}]", lambda: F.relu(hid)),
            (f"clamping: product [{rows}, {cfg['vocab_size']}]", lambda: x0p.reshape(rows, -1) @ e.t()),
            (f"clamping: argmin over {cfg['vocab_size']}", lambda: dots.argmin(dim=-1)),
        ]
        for name, fn in kernels:
            record(f"kernel, batch 256: {name}", timed(dev, 3, reps, fn))

    # Training step, batch 64, shipped config (dropout on).
    cfg_t, train_model = load(args.model, dev)
    train_model.train()
    ac = full_alphas_cumprod(cfg_t["diffusion_steps"])
    opt = torch.optim.AdamW(train_model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    params = [p for p in train_model.parameters()]
    ema = [p.detach().clone() for p in params]
    batch = torch.randint(1, cfg_t["vocab_size"], (64, cfg_t["seq_len"]), device=dev, generator=gen)

    def train_step():
        loss = diffusion_loss(train_model, batch, ac, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - 0.999)
        return loss

    reps = 2 if quick else (100 if on_gpu else 5)
    secs = timed(dev, 3, reps, train_step)
    record("training step batch 64", secs, {"tokens_per_s": round(64 * cfg_t["seq_len"] / secs)})

    # Whole generations.
    gens = [("f32", model)]
    if on_gpu:
        gens.append(("bf16", half_precision_copy(model, torch.bfloat16)))
    for name, m in gens:
        for batch in (1, 256):
            steps = (4 if args.short_cpu else 20) if (not on_gpu and batch > 1) else 200
            if quick:
                steps = min(steps, 10)
            s = Schedule(cfg["diffusion_steps"], steps)
            generate(m, s, batch, dev, gen)
            secs = timed(dev, 0, 1, lambda: generate(m, s, batch, dev, gen)) * 200 / steps
            record(
                f"generation 64 tokens x 200 steps {name} batch {batch}",
                secs,
                {"samples_per_s": batch / secs, "measured_steps": steps},
            )


def check_against_rust(args, dev, results):
    """The Rust prediction (written by gpu_check --dump) against this model's, on `dev`."""
    io = load_file(args.dump)
    cfg, model = load(args.model, dev)
    with torch.no_grad():
        ours = model(io["x"].to(dev), io["t"].to(dev).long())
    diff = (ours.cpu() - io["x0"]).abs().max().item()
    scale = io["x0"].abs().max().item()
    ok = diff / scale <= 1e-3
    print(f"  same denoiser as the Rust code on {dev.type}: max |x0 diff| {diff:.3e} "
          f"(relative {diff / scale:.3e}) {'ok' if ok else 'FAIL'}", flush=True)
    results[f"parity with rust on {dev.type}"] = {"max_abs": diff, "relative": diff / scale, "ok": ok}
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/e2e")
    p.add_argument("--dump", help="x, t and the Rust prediction x0 (safetensors) from gpu_check --dump")
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--out", help="write the figures as JSON here")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cpu-only", action="store_true")
    p.add_argument("--gpu-only", action="store_true", help="skip the CPU timings")
    p.add_argument("--short-cpu", action="store_true", help="CPU generation at batch 256: 4 steps, not 20")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {"torch": torch.__version__, "cpu_threads": torch.get_num_threads()}
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.insert(0, torch.device("cuda"))
        results["gpu"] = torch.cuda.get_device_name(0)
    ok = True
    for dev in devices:
        if args.dump:
            ok &= check_against_rust(args, dev, results)
        if dev.type == "cpu" and args.gpu_only and len(devices) > 1:
            continue
        run(args, dev, "cuda" if dev.type == "cuda" else "cpu", results)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    if not ok:
        raise SystemExit("the PyTorch model disagrees with the Rust one")


if __name__ == "__main__":
    main()
