"""CPU speed of the `llm` engine: CTranslate2's Generator (int8) vs transformers `generate` (fp32), same model.

Both run a Llama-shaped chat model (random weights, a realistic vocabulary) through the project's own
`LLMEngine`: the chat prompt, the per-source new-token budget, batching and output cleaning are included on both
sides; greedy decoding. Random weights rarely produce the end token, so nearly every output runs to its budget
on both backends (the output tokens are printed per engine to show it). Runs are interleaved (hf, ct2, hf, ...) so
load from other processes hits both alike; the median of --repeats is reported, with the ratio to transformers.

    .venv/bin/python bench/llm_cpu_bench.py --threads 2 --repeats 3
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._rates import print_rate_table, time_engines  # noqa: E402
from pipeline.sample.tiny_translators import CHATML, chat_tokenizer  # noqa: E402
from tests.tinymodels import caption_corpus, caption_pairs  # noqa: E402
from translation.convert import convert_model  # noqa: E402
from translation.engines.llm import LLMEngine  # noqa: E402
from translation.engines.llm_settings import LLMSettings  # noqa: E402

MESSAGE = "Translate into European Portuguese:\n{source}"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sentences", type=int, default=64)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--vocab", type=int, default=16000, help="vocabulary size (BPE pieces + filler tokens)")
    p.add_argument("--max-new", type=int, default=48, help="new-token cap (budget: 2 x source tokens + 8)")
    p.add_argument("--batch", type=int, default=32, help="sentences per transformers batch")
    return p.parse_args()


def build_model(folder: Path, args) -> Path:
    """A random Llama chat model with the sample's chat template and a `--vocab`-sized vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = chat_tokenizer(caption_corpus() + [MESSAGE] * 20, 800)
    tokenizer.add_tokens([f"<filler{i}>" for i in range(max(0, args.vocab - len(tokenizer)))])
    tokenizer.chat_template = CHATML
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=args.hidden, num_hidden_layers=args.layers,
                         num_attention_heads=8, num_key_value_heads=8, intermediate_size=3 * args.hidden,
                         max_position_embeddings=512, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    texts = [en for en, _ in caption_pairs(n_scenes=args.sentences // 3 + 1, seed=11)][: args.sentences]
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = build_model(Path(tmp) / "hf", args)
        ct2_dirs = {q: convert_model("llm", str(hf_dir), Path(tmp) / f"ct2-{q}", quantization=q)
                    for q in ("int8", "float32")}
        common = dict(message=MESSAGE, new_tokens_ratio=2.0, new_tokens_extra=8, max_new_tokens=args.max_new)
        # transformers: --batch sentences of (prompt + budget) tokens per generate call.
        hf_tokens = args.batch * (40 + args.max_new)
        engines = {
            "transformers fp32": LLMEngine(LLMSettings(model=str(hf_dir), backend="hf", max_batch_tokens=hf_tokens,
                                                       **common)),
            # The defaults: int8 on CPU, one thread per core as min(cores, 4) replicas x the rest.
            "ctranslate2 int8 (defaults)": LLMEngine(LLMSettings(model=str(ct2_dirs["int8"]), **common)),
            f"ctranslate2 int8 1x{args.threads}": LLMEngine(LLMSettings(
                model=str(ct2_dirs["int8"]), inter_threads=1, intra_threads=args.threads, **common)),
            "ctranslate2 fp32 (defaults)": LLMEngine(LLMSettings(model=str(ct2_dirs["float32"]),
                                                                 compute_type="float32", **common)),
        }
        timings = time_engines(engines, texts, args.repeats, warmup=texts[:8])

    print(f"model: Llama-shaped hidden={args.hidden} layers={args.layers} vocab={args.vocab}, random weights; "
          f"{len(texts)} sentences, chat prompt, greedy, budget 2 x source tokens + 8 (<= {args.max_new}); "
          f"threads={args.threads}; repeats={args.repeats}")
    print(f"load average before/after: {timings.load_before:.2f} / {timings.load_after:.2f} on {os.cpu_count()} cores")
    print_rate_table(timings.times, timings.tokens, engines, len(texts), width=30)


if __name__ == "__main__":
    main()
