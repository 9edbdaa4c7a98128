"""GPU benchmark of V-Glória training steps at thesis scale: Glória-1.3B-shaped (GPT-Neo) and Gervásio-7B-shaped
(LLaMA) LLMs with random weights, batch 180, cached CLS features; torch.compile off and on side by side.

    python bench/train_gpu_bench.py                      # on the H200, from the repository root
    python bench/train_gpu_bench.py --dry-run            # CPU smoke test with miniature shapes
    python bench/train_gpu_bench.py --models gloria --compile on --steps 30 --json $OUT/gpu_bench.json

Self-contained on a machine with only torch + transformers: it imports `training.model` from this checkout
(which needs neither open_clip nor pydantic) and uses an inline CLS-k bridge. Nothing to install or carry.
Reference (issue 5, H200): the FROMAGe recipe costs ~0.37 s/step for 1.3B (CLIP online, two eager passes);
the goal is <= 0.10 s/step (20k steps in ~35 min). CLIP cost is excluded: features come from the cache.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.model import VGloria  # noqa: E402

VIS_DIM = 1024  # CLIP ViT-L/14 width


def llm_config(name: str, dry: bool):
    from transformers import GPTNeoConfig, LlamaConfig

    if name == "gloria":  # GPT-Neo 1.3B (Glória): d 2048, 24 layers, 16 heads, global/local alternating
        if dry:
            return GPTNeoConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4,
                                attention_types=[[["global", "local"], 1]], max_position_embeddings=256,
                                bos_token_id=1, eos_token_id=2)
        return GPTNeoConfig(vocab_size=50257, hidden_size=2048, num_layers=24, num_heads=16,
                            attention_types=[[["global", "local"], 12]], max_position_embeddings=2048,
                            window_size=256, intermediate_size=8192)
    if name == "gervasio":  # LLaMA-2 7B (Gervásio): d 4096, 32 layers, untied head
        if dry:
            return LlamaConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=172, tie_word_embeddings=False)
        return LlamaConfig(vocab_size=32000, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                           num_key_value_heads=32, intermediate_size=11008, max_position_embeddings=4096,
                           tie_word_embeddings=False)
    raise ValueError(name)


class ClsBridge(nn.Module):
    """CLS-k (SPEC section 4): one linear map to k tokens; W_i reads the CLS."""

    def __init__(self, vis_dim: int, llm_dim: int, k: int) -> None:
        super().__init__()
        self.proj, self.n_out, self.llm_dim, self.retrieval_dim = nn.Linear(vis_dim, llm_dim * k), k, llm_dim, vis_dim

    def needs(self) -> dict[str, list[int]]:
        return {"cls": [-1]}

    def forward(self, feats):
        x = feats["cls"][-1].to(self.proj.weight.dtype)
        return self.proj(x).view(x.shape[0], self.n_out, self.llm_dim)

    def retrieval_input(self, feats):
        return feats["cls"][-1]


class _Tok:
    """Stand-in tokenizer: the benchmark feeds token ids directly."""

    eos_token_id, bos_token_id = 2, None

    def __call__(self, texts, **kw):
        return {"input_ids": [[5] for _ in texts]}


def build(name: str, k: int, device: torch.device, dry: bool, fused: bool) -> VGloria:
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with device:
        lm = AutoModelForCausalLM.from_config(llm_config(name, dry), dtype=dtype)
    d = lm.get_input_embeddings().weight.shape[1]
    cfg = SimpleNamespace(q=256, text_emb_layers=[-1], max_caption_tokens=40, logit_scale_init=1 / 0.07,
                          logit_scale_max=100.0, caption_loss_weight=0.5, retrieval_loss_weight=0.5,
                          ret_ce_weight=0.5, fused_pass=fused, llm=name)
    model = VGloria(cfg, lm, _Tok(), ClsBridge(VIS_DIM, d, k)).to(device)
    for _, p in model.trainable_parameters():
        p.data = p.data.float()  # fp32 masters
    return model


def caption_lengths(n: int, gen: torch.Generator) -> list[int]:
    """PT CC3M captions: ~11 words, ~16 BPE tokens; spread 6-36 (the bucketing keeps a batch near one length)."""
    return (torch.randn(n, generator=gen) * 5 + 16).clamp(6, 36).round().int().tolist()


def run(name: str, compile_on: bool, args, device: torch.device) -> dict:
    model = build(name, args.k, device, args.dry_run, fused=not args.two_pass)
    if compile_on:
        model.enable_compile()
    params = [p for _, p in model.trainable_parameters()]
    opt = torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.95), fused=device.type == "cuda")
    gen = torch.Generator().manual_seed(0)
    vocab = model.vocab
    b = args.batch

    def batch(step: int):
        # Bucketed batch: lengths within +-2 tokens of a drawn centre.
        centre = caption_lengths(1, gen)[0]
        lens = [max(4, centre + int(x)) for x in torch.randint(-2, 3, (b,), generator=gen)]
        caps = [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in lens]
        partner = [(i + 1) % b if torch.rand(1, generator=gen).item() < 0.5 else None for i in range(b)]
        feats = {"cls": {-1: torch.randn(b, VIS_DIM, device=device)}, "tokens": {}}
        return feats, caps, partner, sum(lens)

    amp = device.type == "cuda"
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, toks = [], []
    t_first = None
    for step in range(args.warmup + args.steps):
        feats, caps, partner, n_tok = batch(step)
        sync()
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            losses = model(feats, caps, partner)
        losses.total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        dt = time.perf_counter() - t
        if step == 0:
            t_first = dt
        if step >= args.warmup:
            times.append(dt)
            toks.append(n_tok)
    s = statistics.median(times)
    out = {
        "model": name, "compile": compile_on, "fused": not args.two_pass, "batch": b, "k": args.k,
        "s_per_step": s, "steps_per_s": 1 / s, "caption_tokens_per_s": statistics.mean(toks) / s,
        "first_step_s (compile)": t_first, "est_20k_steps_min": 20_000 * s / 60,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "trainable_params": sum(p.numel() for p in params),
    }
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gloria,gervasio")
    ap.add_argument("--compile", choices=["off", "on", "both"], default="both")
    ap.add_argument("--batch", type=int, default=180)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--two-pass", action="store_true", help="caption and retrieval passes separately")
    ap.add_argument("--dry-run", action="store_true", help="CPU, miniature shapes: checks the script runs")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.dry_run:
        device = torch.device("cpu")
        args.batch, args.steps, args.warmup = min(args.batch, 8), min(args.steps, 2), 1
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: use --dry-run")
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    if args.dry_run:
        modes = [False]  # inductor compile of even a tiny model costs minutes of CPU
    results = [run(m, c, args, device) for m in args.models.split(",") for c in modes]
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (dry run, miniature shapes)"
    print(f"\nV-Glória train step, {name}, batch {args.batch}, CLS-{args.k}, cached features")
    print("| LLM | compile | fused | s/step | steps/s | caption tok/s | first step s | 20k steps (min) | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "-"
        print(f"| {r['model']} | {r['compile']} | {r['fused']} | {r['s_per_step']:.3f} | {r['steps_per_s']:.2f} | "
              f"{r['caption_tokens_per_s']:,.0f} | {r['first_step_s (compile)']:.1f} | {r['est_20k_steps_min']:.0f} | "
              f"{mem} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": name, "results": results}, indent=2))


if __name__ == "__main__":
    main()
