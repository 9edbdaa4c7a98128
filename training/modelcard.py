"""The model card (README.md) written into every run folder: what was trained, on what, how well, and its limits.

Training writes it with the facts of the run (and keeps them in `card.json` beside it); every finished
evaluation rewrites it with the metrics of every benchmark evaluated so far (`refresh_model_card`), so
the card never says "not evaluated" next to an eval/ folder full of results."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ptvl_io import write_json_atomic, write_text_atomic
from ptvl_io.formatting import format_metric
from training.config import RunConfig, read_run_toml

CARD_FACTS = "card.json"


def _kwargs_text(kwargs: Mapping[str, Any]) -> str:
    """Bridge arguments as `name = value` pairs (a card is for people, not a Python dict repr)."""
    return ", ".join(f"{k} = {v}" for k, v in sorted(kwargs.items()))


def _results_section(metrics: Mapping[str, Any]) -> str:
    """One table per benchmark (metrics.json's fractions, as the runners return them), or a line saying
    how to get results when none exist yet."""
    flat = {k: v for k, v in metrics.items() if not isinstance(v, Mapping)}
    groups = {k: v for k, v in metrics.items() if isinstance(v, Mapping)}
    if flat:
        groups = {"training-time evaluation": flat, **groups}
    if not groups:
        return ("Not evaluated yet: `ptvl eval --run <this folder> --benchmark ...` (or `ptvl retrain`) "
                "rewrites this section.")
    parts = []
    for bench, values in groups.items():
        rows = [f"| {k} | {format_metric(k, v, 4)} |" for k, v in sorted(values.items()) if v is not None]
        parts.append("\n".join([f"### {bench}", "", "| metric | value |", "|---|---|", *rows]))
    return "Fractions (R@5 = 0.234 is 23.4%) and counts, from `eval/<benchmark>/metrics.json`.\n\n" + "\n\n".join(parts)


def model_card(cfg: RunConfig, *, steps: int, trainable_params: int, data_note: str,
               metrics: Mapping[str, Any] | None = None, final_loss: float | None = None) -> str:
    """metrics: {benchmark: {metric: value}} (or one flat {metric: value} from training-time evaluation)."""
    m, t = cfg.model, cfg.train
    loss = f"{final_loss:.4f}" if final_loss is not None else "n/a"
    kwargs = f" ({_kwargs_text(m.bridge_kwargs)})" if m.bridge_kwargs else ""
    return f"""# V-Glória run: {m.bridge} bridge on {m.llm}

A FROMAGe-style vision-and-language model: a frozen image encoder and a frozen causal language model joined
by small trained layers. Only those layers are in this folder's checkpoints; the LLM and CLIP are loaded from
their own ids.

## Model

| part | value |
|---|---|
| language model (frozen) | `{m.llm}` ({m.dtype}) |
| image encoder (frozen) | open_clip `{m.clip}` / `{m.clip_pretrained}` |
| bridge | `{m.bridge}`, k = {m.k}, ViT layer {m.layer}{kwargs} |
| retrieval | `[RET]` state of LLM layer(s) {m.text_emb_layers} -> q = {m.q}; W_i on the bridge's retrieval input |
| trained parameters | {trainable_params:,} (bridge, `[RET]` rows, W_t, W_i, logit scale) |
| max caption tokens | {m.max_caption_tokens}; caption concatenation p = {m.concat_prob} |

## Training

| setting | value |
|---|---|
| data | {data_note} |
| steps | {steps:,} of {t.steps:,} (batch {t.batch_size}, micro-batch {t.micro_batch_size or t.batch_size}) |
| optimiser | AdamW lr {t.lr}, betas {tuple(t.betas)}, weight decay {t.weight_decay}, {t.warmup_steps} warm-up steps, {t.schedule} |
| loss | recipe `{m.recipe}`: {m.caption_loss_weight} x caption CE + {m.retrieval_loss_weight} x (i2t + t2i InfoNCE) + {m.ret_ce_weight} x [RET]-pass CE |
| final training loss | {loss} |
| seed | {t.seed} |

`run.toml` in this folder reproduces the run (`ptvl train --config run.toml --run-name NEW`); `tensorboard/` holds the curves.

## Results

{_results_section(metrics or {})}

## Intended use

Research on European-Portuguese (PT-PT) image captioning, image-text retrieval and visual dialogue, and as a
baseline for new bridges or new LLMs. Generated text should be reviewed by a person before any publication.

## Limits

- The frozen LLM's biases and errors pass straight into the captions; the bridge cannot correct them.
- Training captions are machine translations of English web alt-text (CC3M) or COCO: translation errors,
  Brazilian-Portuguese forms and alt-text noise are learned too.
- Zero-shot dialogue and VQA are weak at this scale (see the thesis' Tables 5.4-5.5); do not use it for
  decisions about people, medical or safety-critical images.
- A model trained on the synthetic sample only knows coloured shapes: it exists to prove the pipeline works.
"""


def eval_results(run_dir: Path) -> dict[str, dict[str, Any]]:
    """{benchmark: metrics} of every eval/<benchmark>/metrics.json in the run folder."""
    out = {}
    for path in sorted(Path(run_dir).glob("eval/*/metrics.json")):
        out[path.parent.name] = json.loads(path.read_text())["metrics"]
    return out


def write_model_card(run_dir: Path, cfg: RunConfig, *, steps: int, trainable_params: int, data_note: str,
                     metrics: Mapping[str, Any] | None = None, final_loss: float | None = None) -> Path:
    """Write README.md into the run folder atomically, with the evaluations already in eval/; keep the
    training facts in card.json so an evaluation can rewrite the card later."""
    run_dir = Path(run_dir)
    facts = {"steps": steps, "trainable_params": trainable_params, "data_note": data_note,
             "final_loss": final_loss, "training_metrics": dict(metrics or {})}
    write_json_atomic(run_dir / CARD_FACTS, facts)
    return _write(run_dir, cfg, facts)


def refresh_model_card(run_dir: Path) -> Path | None:
    """Rewrite README.md with every evaluation in eval/ (called when an evaluation ends); None when the run
    was never finished (no card.json: nothing to describe yet)."""
    run_dir = Path(run_dir)
    facts_path = run_dir / CARD_FACTS
    if not facts_path.exists():
        return None
    return _write(run_dir, read_run_toml(run_dir / "run.toml"), json.loads(facts_path.read_text()))


def _write(run_dir: Path, cfg: RunConfig, facts: Mapping[str, Any]) -> Path:
    metrics = {**facts.get("training_metrics", {}), **eval_results(run_dir)}
    path = run_dir / "README.md"
    write_text_atomic(path, model_card(cfg, steps=facts["steps"], trainable_params=facts["trainable_params"],
                                       data_note=facts["data_note"], metrics=metrics,
                                       final_loss=facts.get("final_loss")))
    return path
