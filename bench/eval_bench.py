"""Benchmark: time to evaluate COCO-5k retrieval + captioning and VisDial IT2T with a 1.3B GPT-Neo-shaped LLM.

Method (CPU, default): build a GPT-Neo of the 1.3B model's vocabulary (50,257) but small width/depth
(--width/--depth, random weights), run each evaluation unit the way eval.runners + training.model.VGloria
run it, and measure its wall time. Each unit's FLOPs are counted with the same formula for the small and
the 1.3B shape (per token: 2 * 12 d^2 per layer, + 4 * ctx * d per layer of attention, + 2 * d * V for
logits where they are computed). Time model per unit: t = overhead + FLOPs / R, with R the FLOP rate
measured on the retrieval unit (big batched matmuls: the most compute-bound unit) and the overhead of
each unit what its small-model time has beyond FLOPs / R (Python, kernel launches, KV-cache bookkeeping:
independent of width). The 1.3B time is overhead + FLOPs_1.3B / R. Small matrices run below a CPU's peak
R, so on CPU this leans towards over-estimating. Units:
  retrieval  one text_embeddings batch: 256 captions x 17 tokens (caption + [RET]), no logits
  caption    one image: prefix (k visual + BOS) then 30 greedy steps at batch 1 with logits (VGloria
             captions image by image)
  visdial    one round: a 90-token prefix (caption + ~4.5 rounds of history, the mean over rounds 1..10) at
             batch 1, its KV cache repeated over 100 options of 5 tokens, logits + log-softmax on 500 positions
Totals: COCO 5k = 25,000 captions (98 retrieval batches) + 5,000 captions generated; VisDial val =
2,064 dialogs x 10 rounds = 20,640 rounds. CLIP features are cached upstream and not counted; the bridge,
W_i and W_t are negligible next to the LLM.

--gpu: the real 1.3B shape (d 2048, 24 layers, 16 heads) in bf16 on CUDA; each unit is timed directly
(warm-up, then synchronised repeats) and multiplied by its count: no FLOP scaling, which matters because
batch-1 greedy decoding on a GPU is latency-bound, not FLOP-bound.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

VOCAB = 50257
BIG = {"d": 2048, "layers": 24, "heads": 16}  # GPT-Neo 1.3B / Glória 1.3B
K_VISUAL = 1  # visual tokens of the CLS bridge (CrossAtt k=12 only adds 11 prefix tokens)
CAPTION_TOKENS, CAPTION_NEW = 17, 30
RET_BATCH = 256
VD_PREFIX, VD_OPTIONS, VD_OPT_TOKENS = 90, 100, 5
COUNTS = {"retrieval": -(-25_000 // RET_BATCH), "caption": 5_000, "visdial": 2_064 * 10}


@dataclass
class Shape:
    d: int
    layers: int
    heads: int


def token_flops(s: Shape, ctx: float, logits: bool) -> float:
    """Forward FLOPs of one token attending to `ctx` positions."""
    return s.layers * (24 * s.d * s.d + 4 * ctx * s.d) + (2 * s.d * VOCAB if logits else 0)


def unit_flops(s: Shape, unit: str) -> float:
    if unit == "retrieval":
        return RET_BATCH * CAPTION_TOKENS * token_flops(s, CAPTION_TOKENS / 2, False)
    if unit == "caption":
        p = K_VISUAL + 1
        return p * token_flops(s, p / 2, False) + sum(token_flops(s, p + i, True) for i in range(CAPTION_NEW))
    if unit == "visdial":
        return (VD_PREFIX * token_flops(s, VD_PREFIX / 2, False)
                + VD_OPTIONS * VD_OPT_TOKENS * token_flops(s, VD_PREFIX + VD_OPT_TOKENS / 2, True))
    raise ValueError(unit)


def build(s: Shape, device: str, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    cfg = GPTNeoConfig(vocab_size=VOCAB, hidden_size=s.d, num_layers=s.layers, num_heads=s.heads,
                       attention_types=[[["global", "local"], s.layers // 2]] if s.layers % 2 == 0
                       else [[["global"], s.layers]], max_position_embeddings=2048, window_size=256)
    torch.manual_seed(0)
    return GPTNeoForCausalLM(cfg).to(device=device, dtype=dtype).eval()


@torch.no_grad()
def run_unit(lm: torch.nn.Module, unit: str, device: str) -> None:
    body, head = lm.transformer, lm.lm_head
    if unit == "retrieval":
        ids = torch.randint(0, VOCAB, (RET_BATCH, CAPTION_TOKENS), device=device)
        body(input_ids=ids)
    elif unit == "caption":  # VGloria.generate_ids, greedy
        out = body(input_ids=torch.randint(0, VOCAB, (1, K_VISUAL + 1), device=device), use_cache=True)
        h, cache = out.last_hidden_state[:, -1], out.past_key_values
        for _ in range(CAPTION_NEW):
            tok = head(h).argmax(-1, keepdim=True)
            out = body(input_ids=tok, past_key_values=cache, use_cache=True)
            h, cache = out.last_hidden_state[:, -1], out.past_key_values
    elif unit == "visdial":  # VGloria.option_losses for one round
        out = body(input_ids=torch.randint(0, VOCAB, (1, VD_PREFIX), device=device), use_cache=True)
        h0, cache = out.last_hidden_state[:, -1:], out.past_key_values
        cache.batch_repeat_interleave(VD_OPTIONS)
        ids = torch.randint(0, VOCAB, (VD_OPTIONS, VD_OPT_TOKENS), device=device)
        h = body(input_ids=ids, past_key_values=cache, use_cache=True).last_hidden_state
        h = torch.cat([h0.expand(VD_OPTIONS, 1, -1), h[:, :-1]], dim=1)
        F.log_softmax(head(h).float(), -1).gather(-1, ids.unsqueeze(-1)).sum()
    else:
        raise ValueError(unit)


def timed(lm: torch.nn.Module, unit: str, device: str, repeats: int) -> float:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    run_unit(lm, unit, device)  # warm-up (allocator, kernels)
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        run_unit(lm, unit, device)
        sync()
        best = min(best, time.perf_counter() - t)  # min: the machine is shared, noise only adds
    return best


def fmt_h(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="measure the real 1.3B shape on CUDA (bf16)")
    ap.add_argument("--width", type=int, default=256, help="CPU proxy hidden size")
    ap.add_argument("--depth", type=int, default=2, help="CPU proxy layers")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' past_key_values rename
    if args.threads:
        torch.set_num_threads(args.threads)
    big = Shape(**BIG)
    if args.gpu:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu: no CUDA device")
        device, shape, dtype = "cuda", big, torch.bfloat16
        where = f"{torch.cuda.get_device_name()} bf16, measured at the 1.3B shape"
    else:
        device, shape, dtype = "cpu", Shape(args.width, args.depth, max(1, args.width // 64)), torch.float32
        where = (f"CPU x{torch.get_num_threads()} threads fp32, proxy d={shape.d} L={shape.layers}, "
                 f"scaled to d=2048 L=24 by FLOPs")
    lm = build(shape, device, dtype)
    measured = {unit: timed(lm, unit, device, args.repeats) for unit in ("retrieval", "caption", "visdial")}
    rate_r = unit_flops(shape, "retrieval") / measured["retrieval"]  # FLOP/s of the compute-bound unit
    rows = {}
    for unit, t_unit in measured.items():
        overhead = max(0.0, t_unit - unit_flops(shape, unit) / rate_r)
        t_big = t_unit if args.gpu else overhead + unit_flops(big, unit) / rate_r
        rows[unit] = {"measured_s": t_unit, "gflops_per_s": unit_flops(shape, unit) / t_unit / 1e9,
                      "overhead_s": overhead, "big_unit_s": t_big, "count": COUNTS[unit],
                      "total_s": t_big * COUNTS[unit], "big_unit_gflop": unit_flops(big, unit) / 1e9}
    print(f"Evaluation time estimate, 1.3B GPT-Neo shape ({where})\n")
    print(f"{'unit':<10} {'measured':>10} {'GFLOP/s':>9} {'1.3B unit':>10} {'count':>7} {'total':>10}")
    for unit, r in rows.items():
        print(f"{unit:<10} {r['measured_s'] * 1e3:>8.1f}ms {r['gflops_per_s']:>9.1f} "
              f"{r['big_unit_s'] * 1e3:>8.1f}ms {r['count']:>7} {fmt_h(r['total_s']):>10}")
    coco = rows["retrieval"]["total_s"] + rows["caption"]["total_s"]
    print(f"\nCOCO 5k retrieval + captioning: {fmt_h(coco)}; VisDial IT2T (20,640 rounds x 100 options): "
          f"{fmt_h(rows['visdial']['total_s'])}")
    if args.json:
        print(json.dumps({"where": where, "units": rows, "coco_s": coco, "visdial_s": rows["visdial"]["total_s"]}))


if __name__ == "__main__":
    main()
