"""The model card (README.md) written into every run folder: what was trained, on what, how well, and its limits."""
from __future__ import annotations

import os
from pathlib import Path

from training.config import RunConfig


def model_card(cfg: RunConfig, *, steps: int, trainable_params: int, data_note: str,
               metrics: dict[str, float] | None = None, final_loss: float | None = None) -> str:
    m, t = cfg.model, cfg.train
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted((metrics or {}).items())) or "| (none run) | |"
    loss = f"{final_loss:.4f}" if final_loss is not None else "n/a"
    return f"""# V-Glória run: {m.bridge} bridge on {m.llm}

A FROMAGe-style vision-and-language model: a frozen image encoder and a frozen causal language model joined
by small trained layers. Only those layers are in this folder's checkpoints; the LLM and CLIP are loaded from
their own ids.

## Model

| part | value |
|---|---|
| language model (frozen) | `{m.llm}` ({m.dtype}) |
| image encoder (frozen) | open_clip `{m.clip}` / `{m.clip_pretrained}` |
| bridge | `{m.bridge}`, k = {m.k}, ViT layer {m.layer} {m.bridge_kwargs or ""} |
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

| metric | value |
|---|---|
{rows}

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


def write_model_card(run_dir: Path, cfg: RunConfig, **kw: object) -> Path:
    """Write README.md into the run folder atomically."""
    path = Path(run_dir) / "README.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(model_card(cfg, **kw), encoding="utf-8")
    os.replace(tmp, path)
    return path
