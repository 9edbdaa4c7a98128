"""Builders of tiny, offline Hugging Face translation models (mBART-50-like, MADLAD/T5-like and a Llama chat LLM)
for tests.

The builders live in `pipeline.sample.tiny_translators` (the sample run trains its translators with them); here
they train their tokenizers (and, with `train_steps`, the models) on the captions of 200 synthetic scenes, so a
folder loads through exactly the code path a downloaded `Narrativa/...`, `google/madlad400-...` or chat-model
folder does. Reusable by any test that needs a translation model (translation, token stats, benchmarks).
"""
from __future__ import annotations

import random
from pathlib import Path

from pipeline.sample import tiny_translators
from pipeline.sample.scenes import captions, sample_scene
from pipeline.sample.tiny_translators import MADLAD_LANG_TOKENS, train_briefly, train_sentencepiece

__all__ = ["MADLAD_LANG_TOKENS", "build_tiny_llm", "build_tiny_madlad", "build_tiny_mbart50", "caption_corpus",
           "caption_pairs", "train_briefly", "train_sentencepiece"]


def caption_pairs(n_scenes: int = 200, seed: int = 0) -> list[tuple[str, str]]:
    """Parallel (english, pt-pt) captions of `n_scenes` synthetic scenes."""
    rng = random.Random(seed)
    return [pair for _ in range(n_scenes) for pair in captions(sample_scene(rng))]


def caption_corpus(n_scenes: int = 200, seed: int = 0) -> list[str]:
    """English and Portuguese captions of `n_scenes` synthetic scenes, interleaved (a tokenizer corpus)."""
    return tiny_translators.interleaved(caption_pairs(n_scenes, seed))


def build_tiny_mbart50(dest: Path, **settings) -> Path:
    """See `pipeline.sample.tiny_translators.build_tiny_mbart50` (trained on `caption_pairs()`)."""
    tiny_translators.build_tiny_mbart50(dest, caption_pairs(), **settings)
    return dest


def build_tiny_madlad(dest: Path, **settings) -> Path:
    """See `pipeline.sample.tiny_translators.build_tiny_madlad` (trained on `caption_pairs()`)."""
    tiny_translators.build_tiny_madlad(dest, caption_pairs(), **settings)
    return dest


def build_tiny_llm(dest: Path, **settings) -> Path:
    """See `pipeline.sample.tiny_translators.build_tiny_llm` (trained on `caption_pairs()`)."""
    tiny_translators.build_tiny_llm(dest, caption_pairs(), **settings)
    return dest
