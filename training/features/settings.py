"""Settings of the CLIP feature stage (which encoder, which layers, what to cache)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FeatureSettings(BaseModel):
    """Which frozen CLIP to run and what `CacheFeatures` writes. Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")

    clip: str = Field("ViT-L-14", description="open_clip architecture name, model folder, or hf-hub:org/repo")
    pretrained: str | None = Field("openai", description="open_clip weight tag or file (ignored for folders)")
    precision: str = Field("fp32", description="open_clip load precision (fp32, bf16, fp16, ...)")
    layers: list[int] = Field(default_factory=lambda: [-1, -2],
                              description="ViT blocks whose CLS is cached (-1 = last, FROMAGe's pooled CLS)")
    tokens: Literal["cls", "all"] = Field(
        "cls", description="'all' also caches every token of `layers`: 526 KB/image/layer for ViT-L/14")
    batch_size: int = Field(64, ge=1, description="images per encoder forward pass")
    workers: int = Field(4, ge=1, description="threads decoding and preprocessing images")
    autocast: Literal["bf16", "none"] = Field(
        "bf16", description="encoder autocast on GPU (ignored on CPU, where it runs in fp32)")
