"""The sample's machine translators: three tiny models, trained in seconds on the sample's training captions
(EN with their PT-PT reference), saved as Hugging Face folders and converted with `ptvl convert-model`'s code,
so the sample run compares trained engines through exactly the code the real ones use:

- `sample-narrativa`: mBART-50 shaped like Narrativa's fine-tune, trained the longest: the strong one;
- `sample-madlad`: T5 shaped like MADLAD-400, stopped after a few dozen steps: the weak one (loops, drops words),
  so the report's flags and chrF differ visibly;
- `sample-llm`: a Llama chat model trained (partly) on the `llm` engine's own chat prompt followed by the
  translation.

They never see evaluation data: only the profile's `training.data` splits (the sample's CC3M train captions).
The gold PT-PT set is hand-written real-world text, so they score low on it (the comparison report says so).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ptvl_io import atomic_dir
from translation.convert import convert_model

# The sample LLM's user message (configs/sample.toml sets it as the engine's `message`): short, because a tiny
# model trains in seconds only on short sequences.
SAMPLE_LLM_MESSAGE = "Translate into European Portuguese:\n{source}"


@dataclass(frozen=True)
class Recipe:
    """One sample translator: its folder name under models/, its family and how long it trains."""

    name: str
    kind: Literal["narrativa", "madlad", "llm"]
    steps: int
    settings: dict = field(default_factory=dict)

    def hf_folder(self, models: Path) -> Path:
        return models / self.name

    def ct2_folder(self, models: Path) -> Path:
        return models / f"{self.name}-ct2"


# Calibrated on the sample (seed 0, its 600 training captions; chrF on the COCO test captions, CTranslate2 int8):
# narrativa ~95, llm ~70, madlad ~16 with 40% of rows flagged. CPU seconds on one busy core: ~11, ~5, ~4.
RECIPES: tuple[Recipe, ...] = (
    Recipe("sample-narrativa", "narrativa", 200,
           dict(d_model=48, ffn_dim=192, layers=2, vocab_size=300, init_std=0.02, lr=5e-3)),
    # A few dozen steps: enough to emit Portuguese pieces, not enough to stop or to keep the source's words.
    Recipe("sample-madlad", "madlad", 40, dict(d_model=32, d_ff=64, layers=2, vocab_size=300, lr=3e-3)),
    # Partly trained: right on most captions, wrong on some colours, shapes and positions.
    Recipe("sample-llm", "llm", 60,
           dict(hidden=64, layers=2, vocab_size=800, lr=3e-3, message=SAMPLE_LLM_MESSAGE)),
)


def sample_folders(models: Path) -> set[Path]:
    """The converted folders the sample run builds under `models` (what start-up checks accept unbuilt)."""
    return {r.ct2_folder(models).resolve() for r in RECIPES}


def build_sample_translators(models: Path, pairs: Sequence[tuple[str, str]], seed: int = 0,
                             progress: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Train, save and convert (int8) every recipe under `models`; per recipe its first and last loss, steps and
    seconds. Each folder appears atomically; a rerun replaces them."""
    from pipeline.sample import tiny_translators  # deferred: the builders load torch and transformers

    builders = {"narrativa": tiny_translators.build_tiny_mbart50, "madlad": tiny_translators.build_tiny_madlad,
                "llm": tiny_translators.build_tiny_llm}
    if not pairs:
        raise ValueError("no training pairs for the sample translators")
    import torch  # deferred: as above

    out: dict[str, dict] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # models this small: a second thread only spins (and on a shared box, waits)
    try:
        for recipe in RECIPES:
            out[recipe.name] = _build(recipe, builders[recipe.kind], models, pairs, seed)
            if progress is not None:
                r = out[recipe.name]
                progress(f"{recipe.name}: {recipe.steps} steps, loss {r['loss_first']:.2f} -> {r['loss_last']:.2f}, "
                         f"{r['seconds']:.1f} s")
    finally:
        torch.set_num_threads(threads)
    return out


def _build(recipe: Recipe, builder, models: Path, pairs: Sequence[tuple[str, str]], seed: int) -> dict:
    t0 = time.perf_counter()
    with atomic_dir(recipe.hf_folder(models), replace=True) as staging:
        losses = builder(staging, pairs, train_steps=recipe.steps, seed=seed, **recipe.settings)
    convert_model(recipe.kind, str(recipe.hf_folder(models)), recipe.ct2_folder(models), quantization="int8",
                  force=True)
    return {"kind": recipe.kind, "steps": recipe.steps, "loss_first": losses[0], "loss_last": losses[-1],
            "seconds": round(time.perf_counter() - t0, 1)}
