"""Load a frozen open_clip image encoder and extract per-layer CLS / all-token features from it."""
from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image

LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"
CONFIG_NAME = "open_clip_config.json"

Needs = dict[str, list[int]]  # what a bridge consumes: {"cls": [layers], "tokens": [layers]}
Features = dict[str, dict[int, torch.Tensor]]  # {"cls": {layer: (B, m)}, "tokens": {layer: (B, T, m)}}


class ClipLoadError(RuntimeError):
    """The named CLIP model or model folder cannot be loaded (what and why in the message)."""


class UnsupportedEncoder(ValueError):
    """The loaded image tower is not a class-token open_clip ViT, so the CLS conventions do not apply."""


class ImageDecodeError(ValueError):
    """Image bytes that PIL cannot decode."""


def open_clip_args(name: str, pretrained: str | None) -> tuple[str, str | None, bool]:
    """(open_clip model name, pretrained, force_quick_gelu) for `name` as `load_clip` takes it.

    A folder becomes "local-dir:<abs path>" and, like "hf-hub:" ids, carries its own weights, so
    `pretrained` is dropped. A built-in name keeps its tag, and QuickGELU is forced when open_clip's
    registry says the tag was trained with it (open_clip itself only warns).
    """
    import open_clip  # deferred: open_clip loads only when a CLIP is built

    if name.startswith((LOCAL_DIR, HF_HUB)):
        return name, None, False
    path = Path(name).expanduser()
    # A built-in name such as "ViT-L-14" is never taken for a folder unless it really is an open_clip one.
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise ClipLoadError(f"{path}: folder has no {CONFIG_NAME}; not an open_clip model folder")
        return LOCAL_DIR + str(path.resolve()), None, False
    if "/" in name or name.startswith("."):
        raise ClipLoadError(f"{name}: no such open_clip model folder")
    quick_gelu = bool(pretrained) and bool(open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu", False))
    return name, pretrained, quick_gelu


def load_clip(
    name: str = "ViT-L-14", pretrained: str | None = "openai", device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> tuple[torch.nn.Module, Callable[[Image.Image], torch.Tensor]]:
    """Load a frozen open_clip model and its deterministic eval transform.

    `name` is an open_clip built-in architecture ("ViT-L-14", with `pretrained` a tag such as "openai"
    or a checkpoint file), a local open_clip model folder (`open_clip_config.json` + weights, as open_clip
    saves for the hub; a plain path or "local-dir:/path"), or "hf-hub:org/repo". All go through the same
    `open_clip.create_model_and_transforms` call; `pretrained` is ignored for folders and hub ids.

    Tags trained with QuickGELU (OpenAI's) switch it on: open_clip's plain "ViT-L-14" config uses
    nn.GELU and only warns about the mismatch, which would silently change every feature.

    The model is put in eval mode with requires_grad False everywhere. The returned transform is
    open_clip's validation transform (resize shortest side, centre crop, normalise): no augmentation,
    so cached features equal online ones.
    """
    import open_clip  # deferred: open_clip loads only when a CLIP is built

    model_name, pretrained, force_quick_gelu = open_clip_args(name, pretrained)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=device, precision=precision,
            force_quick_gelu=force_quick_gelu,
        )
    except (RuntimeError, ValueError, FileNotFoundError, OSError) as e:
        raise ClipLoadError(f"cannot load open_clip model {name!r} (pretrained={pretrained!r}): {e}") from e
    model.eval()
    model.requires_grad_(False)
    return model, preprocess


def decode_image(image: Image.Image | bytes) -> Image.Image:
    """A PIL image from a PIL image or encoded bytes (JPEG, PNG...). Raises ImageDecodeError."""
    if isinstance(image, Image.Image):
        return image
    try:
        img = Image.open(io.BytesIO(image))
        img.load()
    except Exception as e:  # PIL raises several unrelated types for bad data
        raise ImageDecodeError(f"cannot decode image ({len(image)} bytes): {e}") from e
    return img


def to_pixels(images: Iterable[Image.Image | bytes], preprocess: Callable[[Image.Image], torch.Tensor]
              ) -> torch.Tensor:
    """Decode and preprocess images into one (B, 3, H, W) batch."""
    return torch.stack([preprocess(decode_image(im)) for im in images])


class VisualEncoder:
    """Per-layer features of a frozen open_clip ViT, computed with `forward_intermediates`, no grads.

    Layer indices count transformer blocks: -1 is the last block (L), -2 is L-1, ...; 0 is the first
    block. Conventions (chosen to match FROMAGe, which uses Hugging Face `CLIPVisionModel`):

    - CLS of the LAST layer is the pooled output: `ln_post(CLS)` after the final LayerNorm, WITHOUT the
      visual projection `proj`. This is HF's `pooler_output = post_layernorm(last_hidden_state[:, 0])`,
      width m (1024 for ViT-L/14), exactly what FROMAGe feeds its W_c and W_i.
    - CLS of an earlier layer is the raw residual-stream CLS after that block (HF `hidden_states[l][:, 0]`,
      no LayerNorm): ln_post belongs to the last layer only.
    - All tokens of ANY layer, the last included, are the raw residual stream (B, 1 + P, m), CLS first
      (HF `hidden_states[l]`, as LLaVA uses them). So `tokens[-1][:, 0]` is not `cls[-1]`: the latter has
      ln_post applied.

    `autocast` (e.g. torch.bfloat16) runs the tower under autocast; outputs then come in that dtype.
    """

    def __init__(self, model: torch.nn.Module, *, name: str | None = None,
                 autocast: torch.dtype | None = None) -> None:
        from open_clip.transformer import (
            VisionTransformer,  # deferred: open_clip loads only when a CLIP is built
        )

        visual = getattr(model, "visual", model)
        if not isinstance(visual, VisionTransformer):
            raise UnsupportedEncoder(
                f"image tower is {type(visual).__name__}; only open_clip VisionTransformer towers are supported")
        if visual.attn_pool is not None or visual.pool_type != "tok":
            raise UnsupportedEncoder(
                f"image tower pools with pool_type={visual.pool_type!r}, attn_pool={visual.attn_pool is not None};"
                " the CLS conventions need class-token pooling")
        self.visual = visual.eval().requires_grad_(False)
        self.name = name
        self.autocast = autocast
        self.width: int = visual.transformer.width
        self.n_layers: int = len(visual.transformer.resblocks)
        self.grid: tuple[int, int] = tuple(visual.grid_size)
        self.n_tokens: int = 1 + self.grid[0] * self.grid[1]
        self.image_size: tuple[int, int] = tuple(visual.image_size)

    @property
    def device(self) -> torch.device:
        return self.visual.conv1.weight.device

    def resolve(self, layer: int) -> int:
        """Absolute block index of `layer` (negative counts from the end). Raises on out of range."""
        absolute = layer + self.n_layers if layer < 0 else layer
        if not 0 <= absolute < self.n_layers:
            raise IndexError(f"layer {layer} out of range for a {self.n_layers}-layer ViT")
        return absolute

    @torch.no_grad()
    def features(self, images: torch.Tensor, needs: Needs) -> Features:
        """One forward pass giving {"cls": {layer: (B, m)}, "tokens": {layer: (B, 1+P, m)}} for `needs`.

        Keys are the layer indices exactly as given in `needs`.
        """
        unknown = set(needs) - {"cls", "tokens"}
        if unknown:
            raise ValueError(f"unknown feature kinds {sorted(unknown)}; expected 'cls' and/or 'tokens'")
        wanted = [*needs.get("cls", []), *needs.get("tokens", [])]
        if not wanted:
            return {"cls": {}, "tokens": {}}
        take = sorted({self.resolve(layer) for layer in wanted})
        images = images.to(self.device)
        with torch.autocast(images.device.type, dtype=self.autocast or torch.float32,
                            enabled=self.autocast is not None):
            # stop_early: requesting L-1 only never runs block L.
            out = self.visual.forward_intermediates(
                images, indices=take, stop_early=True, output_fmt="NLC", output_extra_tokens=True,
                intermediates_only=True)
            # forward_intermediates returns blocks in ascending order; glue CLS back on: (B, 1+P, m).
            full = {i: torch.cat([p, x], dim=1) for i, p, x in
                    zip(take, out["image_intermediates_prefix"], out["image_intermediates"], strict=True)}
            last = self.n_layers - 1
            cls = {layer: (self.visual.ln_post(full[last][:, 0]) if self.resolve(layer) == last
                           else full[self.resolve(layer)][:, 0])
                   for layer in needs.get("cls", [])}
        tokens = {layer: full[self.resolve(layer)] for layer in needs.get("tokens", [])}
        return {"cls": cls, "tokens": tokens}

    def encode(self, images: torch.Tensor, layers: Sequence[int], tokens: Literal["cls", "all"] = "cls"
               ) -> dict[int, torch.Tensor]:
        """Features of `layers` for preprocessed `images` (B, 3, H, W): CLS (B, m) or all tokens (B, 1+P, m).

        See the class docstring for the exact conventions per layer.
        """
        if tokens not in ("cls", "all"):
            raise ValueError(f"tokens must be 'cls' or 'all', not {tokens!r}")
        kind = "cls" if tokens == "cls" else "tokens"
        return self.features(images, {kind: list(layers)})[kind]

    def describe(self) -> dict[str, Any]:
        """Shape facts the cache and the bridges need."""
        return {"clip": self.name, "width": self.width, "n_layers": self.n_layers, "grid": list(self.grid),
                "n_tokens": self.n_tokens, "image_size": list(self.image_size)}
