"""GPU speed: CTranslate2 vs transformers greedy on an mBART-large-50-shaped model (random weights).

Self-contained (torch, transformers, ctranslate2; no ptvl import, no download): the model is built
from a config with random weights, inputs are random token ids of one fixed length, and both
engines decode exactly --out-len tokens (min = max length), so they do the same work. Prints
sentences/s side by side: transformers generate vs CTranslate2 in each compute type.
Reference: the transformers greedy baseline measured on an H200 was 633 sentences/s at batch 256;
the goal for CTranslate2 is >= 3,000 sentences/s.

Running it on the GPU machine (torch 2.11 + CUDA 13 + transformers there, but no ctranslate2, no network):
  1. Here, fetch the wheel for the device's Python (check `python -V` there; cp311 below):
       .venv/bin/pip download ctranslate2==4.8.5 --no-deps --only-binary=:all: \
           --python-version 3.11 --platform manylinux2014_x86_64 -d wheels/
     and carry `wheels/` with the command (e.g. run(carry=["wheels"], ...)).
  2. There:  pip install --no-deps wheels/ctranslate2-*.whl && python bench/translate_gpu_bench.py
CTranslate2 4.x CUDA builds load cuBLAS 12 (libcublas.so.12 / libcublasLt.so.12) at their first
GPU matrix product; torch built for CUDA 13 ships only cuBLAS 13. The script therefore first
converts a tiny model and translates one sentence on the GPU, and if that fails it says so
(with the library error), runs the transformers baseline alone and exits with status 3. The fix
is an `nvidia-cublas-cu12` wheel installed there and its `nvidia/cublas/lib` on LD_LIBRARY_PATH.

Check the script here, on CPU, with tiny sizes:  .venv/bin/python bench/translate_gpu_bench.py --dry-run
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import MBartConfig, MBartForConditionalGeneration

# mBART-large-50 (facebook/mbart-large-50, Narrativa's base): 611M parameters.
LARGE = dict(vocab_size=250054, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
             decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096)
TINY = dict(vocab_size=1000, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128)
BOS, PAD, EOS, UNK = 0, 1, 2, 3


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="tiny model on CPU: checks the script runs")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--sentences", type=int, default=4096)
    p.add_argument("--src-len", type=int, default=24, help="source tokens per sentence (caption-sized)")
    p.add_argument("--out-len", type=int, default=24, help="output tokens, pt_XX included, both engines")
    p.add_argument("--hf-dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--compute-types", default="float16,bfloat16,int8_float16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device-index", type=int, default=0)
    args = p.parse_args()
    if args.dry_run:
        args.batch, args.sentences, args.out_len, args.src_len = 8, 32, 8, 10
        args.hf_dtype, args.compute_types, args.repeats = "float32", "float32,int8", 1
    return args


class _Vocabulary:
    """Stands in for the tokenizer the converter reads: token strings by id, plus the special tokens."""

    bos_token, eos_token, unk_token = "<s>", "</s>", "<unk>"

    def __init__(self, size: int) -> None:
        self.tokens = ["<s>", "<pad>", "</s>", "<unk>"] + [f"t{i}" for i in range(4, size - 2)] + ["en_XX", "pt_XX"]

    def get_vocab(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}


def build_model(shape: dict) -> MBartForConditionalGeneration:
    config = MBartConfig(**shape, max_position_embeddings=1024, scale_embedding=True, pad_token_id=PAD,
                         bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=EOS,
                         forced_bos_token_id=shape["vocab_size"] - 1, tokenizer_class="MBart50Tokenizer")
    config.normalize_before = True  # mBART is pre-norm; transformers 5 no longer records it
    torch.manual_seed(0)
    return MBartForConditionalGeneration(config).eval()


def convert(model: MBartForConditionalGeneration, dest: Path, quantization: str) -> Path:
    """CTranslate2's TransformersConverter fed the in-memory model and the stand-in vocabulary."""
    from ctranslate2.converters import TransformersConverter

    class InMemoryConverter(TransformersConverter):
        def load_model(self, model_class, model_name_or_path, **kwargs):
            return model

        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            return _Vocabulary(model.config.vocab_size)

    config_dir = dest.parent / f"{dest.name}-hfconfig"
    model.config.save_pretrained(config_dir)  # the converter reads the config from disk first
    InMemoryConverter(str(config_dir)).convert(str(dest), quantization=quantization, force=True)
    return dest


def check_ctranslate2(device: str, device_index: int, workdir: Path) -> str | None:
    """None if CTranslate2 can translate on `device`, else a message saying what is missing."""
    try:
        import ctranslate2
    except ImportError:
        return "ctranslate2 is not installed here: carry its wheel and `pip install --no-deps` it (see the top of this file)"
    if device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        return f"ctranslate2 {ctranslate2.__version__} sees no CUDA device (a CPU-only wheel, or no driver)"
    try:
        tiny = convert(build_model(TINY), workdir / "check", "float32")
        translator = ctranslate2.Translator(str(tiny), device=device, device_index=device_index)
        translator.translate_batch([["en_XX", "t5", "</s>"]], [["pt_XX"]], beam_size=1, max_decoding_length=4)
    except Exception as err:  # noqa: BLE001 - any failure here means "cannot run", reported verbatim
        return (f"ctranslate2 {ctranslate2.__version__} cannot translate on {device}: {err}\n"
                "CTranslate2 4.x CUDA wheels need cuBLAS 12 (libcublas.so.12); torch for CUDA 13 ships only "
                "cuBLAS 13. Install nvidia-cublas-cu12 and put its nvidia/cublas/lib on LD_LIBRARY_PATH.")
    del translator
    return None


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_transformers(model, source_ids: torch.Tensor, args, device: str) -> tuple[list[float], int]:
    dtype = getattr(torch, args.hf_dtype)
    model = model.to(device=device, dtype=dtype)
    gen = dict(num_beams=1, do_sample=False, min_new_tokens=args.out_len, max_new_tokens=args.out_len,
               decoder_start_token_id=EOS, forced_bos_token_id=model.config.vocab_size - 1, pad_token_id=PAD)
    batches = source_ids.to(device).split(args.batch)
    out_len = 0

    def run() -> float:
        nonlocal out_len
        sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                out = model.generate(input_ids=batch, attention_mask=torch.ones_like(batch), **gen)
                out_len = out.shape[1] - 1  # minus the decoder start token
        sync(device)
        return time.perf_counter() - start

    with torch.inference_mode():
        model.generate(input_ids=batches[0], attention_mask=torch.ones_like(batches[0]), **gen)  # warm-up
    times = [run() for _ in range(args.repeats)]
    model.to("cpu")
    return times, out_len


def bench_ctranslate2(model_dir: Path, compute_type: str, source: list[list[str]], args,
                      device: str) -> tuple[list[float], int]:
    import ctranslate2

    translator = ctranslate2.Translator(str(model_dir), device=device, device_index=args.device_index,
                                        compute_type=compute_type)
    prefix = [["pt_XX"]] * len(source)
    opts = dict(max_batch_size=args.batch, batch_type="examples", beam_size=1,
                min_decoding_length=args.out_len, max_decoding_length=args.out_len)
    translator.translate_batch(source[: args.batch], prefix[: args.batch], **opts)  # warm-up
    times, out_len = [], 0
    for _ in range(args.repeats):
        start = time.perf_counter()
        results = translator.translate_batch(source, prefix, **opts)
        times.append(time.perf_counter() - start)
        out_len = max(len(r.hypotheses[0]) for r in results)
    del translator
    gc.collect()
    return times, out_len


def main() -> int:
    args = parse_args()
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("torch sees no CUDA device; use --dry-run to check the script on CPU")
        return 2
    shape = TINY if args.dry_run else LARGE
    name = torch.cuda.get_device_name(args.device_index) if device == "cuda" else "CPU (dry run)"
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch}; {args.sentences} sentences x "
          f"{args.src_len} source tokens -> {args.out_len} output tokens; repeats {args.repeats}")

    generator = torch.Generator().manual_seed(1)
    body = torch.randint(4, shape["vocab_size"] - 2, (args.sentences, args.src_len - 2), generator=generator)
    en, eos = torch.full((args.sentences, 1), shape["vocab_size"] - 2), torch.full((args.sentences, 1), EOS)
    source_ids = torch.cat([en, body, eos], dim=1)  # en_XX ... </s>, as the mBART-50 tokenizer builds them

    start = time.perf_counter()
    model = build_model(shape)
    print(f"built {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M-parameter model in "
          f"{time.perf_counter() - start:.0f} s")
    rows: list[tuple[str, list[float], int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        problem = check_ctranslate2(device, args.device_index, Path(tmp))
        if problem:
            print(f"CTranslate2 CHECK FAILED: {problem}")
        else:
            vocab = _Vocabulary(shape["vocab_size"]).tokens
            source = [[vocab[i] for i in row] for row in source_ids.tolist()]
            stored = "float32" if args.dry_run else "float16"  # loaded in every compute type below
            model_dir = convert(model, Path(tmp) / "ct2", stored)
        times, out_len = bench_transformers(model, source_ids, args, device)
        rows.append((f"transformers {args.hf_dtype}", times, out_len))
        if not problem:
            for compute_type in args.compute_types.split(","):
                times, out_len = bench_ctranslate2(model_dir, compute_type, source, args, device)
                rows.append((f"ctranslate2 {compute_type}", times, out_len))

    baseline = args.sentences / statistics.median(rows[0][1])
    print(f"{'engine':<26}{'sent/s':>10}{'tokens/s':>12}{'x vs HF':>9}  output length")
    for label, times, out_len in rows:
        rate = args.sentences / statistics.median(times)
        print(f"{label:<26}{rate:>10.0f}{rate * out_len:>12.0f}{rate / baseline:>9.2f}  {out_len}")
    if not args.dry_run:
        print("reference: transformers greedy 633 sent/s at batch 256 (measured before); goal >= 3000 with CTranslate2")
    return 3 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
