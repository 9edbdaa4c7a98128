"""Builder of a tiny, offline open_clip ViT saved as an open_clip model folder, for tests and the sample,
and a brief contrastive pretraining of it on the sample's (image, English captions) pairs.

The folder has exactly the layout open_clip writes for the Hugging Face hub (`open_clip_config.json` with
`model_cfg` + `preprocess_cfg`, and `open_clip_model.safetensors`), so `training.features.load_clip(path)`
loads it through the same `open_clip.create_model_and_transforms` call as `ViT-L-14`/`openai`.
"""
from __future__ import annotations

import io
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME
from open_clip.push_to_hf_hub import save_config_for_hf
from open_clip.transform import PreprocessCfg
from PIL import Image
from safetensors.torch import save_file

from ptvl_io import atomic_path
from training.features.encoder import load_clip


def tiny_clip_config(
    image_size: int = 64, width: int = 64, layers: int = 4, patch: int = 8, head_width: int = 16,
    embed_dim: int = 32, text_width: int = 32, text_layers: int = 1,
) -> dict[str, Any]:
    """An open_clip model config (the `model_cfg` dict) for a tiny ViT with a minimal text tower.

    The text tower keeps the standard 49,408-token vocabulary so the default CLIP tokenizer still fits;
    the features code never runs it.
    """
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": image_size, "layers": layers, "width": width, "patch_size": patch,
            "head_width": head_width,
        },
        "text_cfg": {
            "context_length": 16, "vocab_size": 49408, "width": text_width, "heads": 2, "layers": text_layers,
        },
    }


def build_tiny_clip(
    dest: Path, image_size: int = 64, width: int = 64, layers: int = 4, patch: int = 8, *,
    head_width: int = 16, embed_dim: int = 32, seed: int = 0,
) -> Path:
    """Build a randomly initialised (seeded) tiny open_clip ViT and save it as a model folder at `dest`.

    64-px images with 8-px patches give an 8x8 grid: 65 tokens (1 CLS + 64 patches) of width 64.
    Returns `dest`. Deterministic: the same arguments give bit-identical weights.
    """
    cfg = tiny_clip_config(image_size, width, layers, patch, head_width, embed_dim)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    # What create_model attaches to every model it builds; save_config_for_hf reads it back.
    open_clip.set_model_preprocess_cfg(model, asdict(PreprocessCfg(size=image_size)))
    # Random init leaves ln_post at identity; perturb it so tests can tell "after ln_post" from "before".
    with torch.no_grad():
        model.visual.ln_post.weight.normal_(1.0, 0.2)
        model.visual.ln_post.bias.normal_(0.0, 0.2)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dest / HF_SAFE_WEIGHTS_NAME))
    save_config_for_hf(model, dest / HF_CONFIG_NAME, model_config=cfg)
    return dest


def pretrain_tiny_clip(
    folder: Path, pairs: Sequence[tuple[bytes, Sequence[str]]], *, steps: int = 300, batch: int = 64,
    lr: float = 1e-3, weight_decay: float = 0.1, seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train the open_clip folder at `folder` for `steps` contrastive steps and save it back in place.

    pairs: (JPEG bytes, English captions of that image); each step draws `batch` distinct images and one
    random caption of each, and minimises open_clip's own `ClipLoss` (symmetric InfoNCE). Images go
    through the folder's deterministic eval transform, so the features later cached are exactly those
    of the encoder trained here.

    Why: a random tiny ViT's frozen features carry colour well but shape poorly (linear probe ~0.5 on
    the CLS), and a bridge cannot caption what its features do not hold; a real CLIP is trained, so a
    briefly trained tiny one is the closer stand-in for ViT-L/14. Returns the loss of every step.
    Deterministic for a given seed and thread count. The weights file is replaced atomically.
    """
    if len(pairs) < 2:
        raise ValueError("pretrain_tiny_clip needs at least 2 (image, captions) pairs for a contrastive loss")
    if any(not caps for _, caps in pairs):
        raise ValueError("pretrain_tiny_clip: every image needs at least one caption")
    folder = Path(folder)
    torch.manual_seed(seed)
    model, preprocess = load_clip(str(folder))
    model.train()
    model.requires_grad_(True)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    context = model.context_length  # the tiny text tower's own length (16)
    images = torch.stack([preprocess(Image.open(io.BytesIO(jpeg)).convert("RGB")) for jpeg, _ in pairs])
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    rng = random.Random(seed)
    n = min(batch, len(pairs))
    losses: list[float] = []
    for step in range(steps):
        idx = rng.sample(range(len(pairs)), n)
        text = tokenizer([rng.choice(list(pairs[i][1])) for i in idx], context_length=context)
        image_features, text_features, logit_scale = model(images[idx], text)
        loss = loss_fn(image_features, text_features, logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, losses[-1])
    with atomic_path(folder / HF_SAFE_WEIGHTS_NAME) as tmp:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    return losses
