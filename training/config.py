"""Settings of a V-Glória run (model + training), their TOML form, and presets named for thesis configurations."""
from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ptvl_io import write_text_atomic

Recipe = Literal["thesis-eq", "fromage"]

# What each training recipe sets when the profile does not set the key itself. The mechanics that are not
# numbers (concatenation, sequence layout, [RET] row renormalisation) follow `recipe` alone:
# - "thesis-eq": the thesis' equation, ptvl's behaviour before recipes were named. Caption rows
#   [BOS] [VIS*k] cap EOS (EOS is a target); each example draws its own concatenation coin and is joined by
#   the next example, which also keeps its own row (second captions count twice); [RET] rows train freely.
# - "fromage": what V-GlorIA's args.json ran (FROMAGe's code). Caption rows [VIS*k] [BOS] cap with no EOS
#   target (BOS is a target, predicted from the visual prefix, as FROMAGe's labels start at BOS); one coin
#   per step concatenates fixed pairs (0,1), (2,3)... into B/2 rows, each caption used once;
#   max_caption_tokens counts the whole tokenised caption [BOS] cap [RET], as FROMAGe's max_len; after each
#   optimizer step the [RET] input (and untied output) row is rescaled to the frozen rows' mean norm.
RECIPES: dict[str, dict[str, Any]] = {
    "thesis-eq": {"caption_loss_weight": 0.5, "ret_ce_weight": 0.5, "retrieval_loss_weight": 0.5,
                  "max_caption_tokens": 32, "concat_prob": 0.5},
    "fromage": {"caption_loss_weight": 1.0, "ret_ce_weight": 1.0, "retrieval_loss_weight": 0.5,
                "max_caption_tokens": 24, "concat_prob": 0.5},
}


class ModelConfig(BaseModel):
    """What the model is: which frozen LLM and CLIP, which bridge, and the FROMAGe losses."""

    model_config = ConfigDict(extra="forbid")

    recipe: Recipe = Field(
        "thesis-eq",
        description="training recipe: 'thesis-eq' (the thesis' equation) or 'fromage' (the code that produced "
        "the thesis tables); sets the loss weights, max_caption_tokens and concat_prob a profile leaves unset, "
        "and the concatenation, layout and [RET] renormalisation mechanics (training/config.py RECIPES)",
    )

    llm: str = Field("NOVA-vision-language/GlorIA-1.3B", description="HF causal LM id or local folder")
    clip: str = Field("ViT-L-14", description="open_clip model name or local open_clip folder")
    clip_pretrained: str = Field(
        "openai", description="open_clip pretrained tag ('' for none; ignored for local model folders)"
    )
    bridge: str = Field("cls", description="bridge registry name (training/bridges.py)")
    k: int = Field(1, ge=1, description="visual tokens fed to the LLM (where the bridge takes k)")
    layer: int = Field(-1, description="ViT layer of the visual features (-1 = last, -2 = L-1, ...)")
    bridge_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra bridge arguments")
    feature_norm: Literal["none", "standardize"] = Field(
        "none",
        description="'standardize': per-dimension (x - mean) / std of the frozen visual features, with fixed "
        "statistics of the training images (saved in checkpoints). Off in the FROMAGe recipe; needed by "
        "encoders whose features share a large constant component (a random tiny ViT: std/mean ~ 1%)",
    )
    text_emb_layers: list[int] = Field(
        default_factory=lambda: [-1],
        description="LLM hidden layers at [RET] fed to W_t (one linear map each, summed; FROMAGe: [-1])",
    )
    q: int = Field(256, ge=1, description="shared retrieval embedding size")
    max_caption_tokens: int = Field(
        32, ge=2, description="caption tokens kept, counting the closing EOS / [RET] (and, in the fromage "
        "recipe, the BOS); truncation keeps it last"
    )
    concat_prob: float = Field(0.5, ge=0.0, le=1.0, description="probability of [img1 cap1 img2 cap2]")
    caption_loss_weight: float = Field(0.5, ge=0.0, description="weight of the captioning CE")
    retrieval_loss_weight: float = Field(0.5, ge=0.0, description="weight of (i2t + t2i) InfoNCE")
    ret_ce_weight: float = Field(0.5, ge=0.0, description="weight of the retrieval-pass CE (emitting [RET])")
    logit_scale_init: float = Field(1 / 0.07, gt=0, description="initial InfoNCE inverse temperature (CLIP)")
    logit_scale_max: float = Field(
        100.0, gt=1, description="clamp of the inverse temperature, applied to the parameter in place after "
        "each optimizer step (as CLIP), so a scale above it still has a gradient and can come back down")
    dtype: Literal["bf16", "fp16", "fp32"] = Field(
        "bf16", description="dtype of the frozen LLM and CLIP ('fp16' is refused: it needs loss scaling)")
    compile: bool | None = Field(None, description="torch.compile the LLM (None: on for CUDA)")
    fused_pass: bool | None = Field(
        None,
        description="captioning and retrieval sequences in one LLM forward (None: on for CUDA). The fused "
        "batch pads both to the longer caption rows: ~3% faster on an H200 at batch 180, but 1.6x slower "
        "on CPU with a 3M-parameter LM (bench/RESULTS.md)",
    )
    attn_implementation: str | None = Field(None, description="HF attention backend (None: model default)")

    @model_validator(mode="before")
    @classmethod
    def _recipe_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            recipe = data.get("recipe", "thesis-eq")
            if recipe in RECIPES:  # an unknown name is reported by the field's own validation
                data = {**RECIPES[recipe], **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if not self.text_emb_layers:
            raise ValueError("text_emb_layers must name at least one LLM layer")
        if self.dtype == "fp16":  # the loop runs bf16 autocast and has no GradScaler: fp16 would underflow
            raise ValueError("dtype 'fp16' is not supported: fp16 training needs a GradScaler, which ptvl does "
                             "not use; use 'bf16' (GPUs since Ampere) or 'fp32'")
        return self


class TrainConfig(BaseModel):
    """How the trainable part is optimised; defaults are the FROMAGe / thesis recipe."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(3e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(100, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine floor as a fraction of lr")
    steps: int = Field(20_000, ge=1, description="optimizer steps (20k is about one CC3M epoch)")
    batch_size: int = Field(180, ge=1, description="global batch (all ranks, all micro-batches)")
    micro_batch_size: int | None = Field(
        None, ge=1, description="per-rank micro-batch for gradient accumulation (None: no accumulation)"
    )
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0
    log_every: int = Field(10, ge=1)
    ckpt_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept on disk")
    eval_every: int = Field(0, ge=0, description="steps between eval callbacks (0: only at the end)")
    use_cached_features: bool = Field(True, description="read CLS features from the cache (CLS bridges)")
    num_workers: int = Field(0, ge=0, description="DataLoader workers for online JPEG decoding")
    bucket_by_length: bool = Field(True, description="batch captions of similar length (padding is waste)")
    bucket_pool: int = Field(50, ge=1, description="batches pooled and sorted by length per bucket")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.micro_batch_size is not None and self.micro_batch_size > self.batch_size:
            raise ValueError("micro_batch_size cannot exceed batch_size")
        return self


class RunInputs(BaseModel):
    """What a run read and where it wrote. With the resolved [model] and [train] (seed included), this makes
    run.toml self-contained: `ptvl train --config run.toml` reruns it without the profile."""

    model_config = ConfigDict(extra="forbid")

    shards: list[str] = Field(description="CAPTION_SHARD files, absolute paths, in training order")
    shard_bytes: list[int] = Field(default_factory=list, description="their sizes when the run started (checked)")
    features: str | None = Field(None, description="CLIP feature cache folder (None: the encoder runs online)")
    device: str | None = Field(None, description="device the run trained on (None: cuda if available, else cpu)")
    run_dir: str = Field(description="the run folder this file was written in")
    root: str | None = Field(None, description="the pipeline run root the run belongs to (None: outside one)")
    profile: str | None = Field(None, description="the profile that started the run (for the record)")

    @model_validator(mode="after")
    def _check(self) -> RunInputs:
        if self.shard_bytes and len(self.shard_bytes) != len(self.shards):
            raise ValueError("inputs.shard_bytes must give one size per shard file")
        return self


class RunConfig(BaseModel):
    """A run: model + training (+ its inputs). Written as run.toml beside every run; reading it back
    reproduces it."""

    model_config = ConfigDict(extra="forbid")

    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    inputs: RunInputs | None = None


# ---------------------------------------------------------------- TOML (tomllib reads, tomli_w writes)


def drop_none(value: Any) -> Any:
    """`value` with every None left out, recursively: keys whose value is None from tables, None items from
    arrays (tuples become lists, as tomllib reads arrays back).

    Why dropping is right: TOML has no null, and in ptvl a None setting means "the default" (every optional
    field defaults to None), so a left-out key reads back as the same settings.  A None inside a list or an
    inline table (free-form `bridge_kwargs` can hold one) has no TOML form either; dropping it is the same
    "not set" reading, whereas refusing it would fail a run at writing its own run.toml after it trained."""
    if isinstance(value, Mapping):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [drop_none(v) for v in value if v is not None]
    return value


def _comment(line: str) -> str:
    """A header line as a TOML comment.  Comments may not hold control characters other than tab (tomllib
    rejects the file), and a header names paths and overrides the user typed: show those escaped."""
    return "# " + "".join(c if c == "\t" or (c >= " " and c != "\x7f") else f"\\x{ord(c):02x}" for c in line)


def to_toml(data: dict[str, Any], header: str = "") -> str:
    """TOML text of `data` (tables, scalars, lists, nested tables) with `header` as leading comment lines.
    None values are left out (drop_none), which round-trips because every optional setting defaults to
    None: tomllib.loads(to_toml(x)) == drop_none(x).  Escaping (control characters, quotes, non-ASCII keys)
    is tomli_w's."""
    body = tomli_w.dumps(drop_none(data))
    lines = [_comment(line) for line in header.splitlines()]
    return "\n".join(lines) + "\n\n" + body if lines else body


def write_run_toml(cfg: RunConfig, path: Path, header: str = "") -> Path:
    """Write run.toml atomically (whole or not at all: a run folder is read back to resume and reproduce)."""
    write_text_atomic(path, to_toml(cfg.model_dump(mode="json"), header))
    return path


def read_run_toml(path: Path) -> RunConfig:
    """Read a run.toml (or any TOML with [model] and [train] tables); unknown keys are errors."""
    with open(path, "rb") as f:
        return RunConfig.model_validate(tomllib.load(f))


# Switches that change speed, not the maths: a run may resume with them resolved differently (another device).
PERFORMANCE_ONLY = ("compile", "fused_pass")


def same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two dumped [model] tables train the same model (recipe defaults filled in on both sides, so a
    checkpoint written before a key existed still compares equal; performance switches ignored)."""
    da, db = (ModelConfig.model_validate(x).model_dump(mode="json", exclude=set(PERFORMANCE_ONLY)) for x in (a, b))
    return da == db


# ---------------------------------------------------------------- presets (thesis configurations)

GLORIA = "NOVA-vision-language/GlorIA-1.3B"
GERVASIO = "PORTULAN/gervasio-7b-portuguese-ptpt-decoder"
GPT_NEO_EN = "EleutherAI/gpt-neo-1.3B"
GEMMA_2B = "google/gemma-2b"


def gloria_1b3_cls(k: int = 1, layer: int = -1) -> RunConfig:
    """V-Glória as in chapter 5: Glória 1.3B, CLS of the last layer, FROMAGe recipe."""
    return RunConfig(model=ModelConfig(llm=GLORIA, bridge="cls", k=k, layer=layer))


def gloria_1b3_crossattn12() -> RunConfig:
    """The thesis' best bridge (CrossAtt, k = 12, layer L-1) on Glória 1.3B."""
    return RunConfig(
        model=ModelConfig(llm=GLORIA, bridge="crossattn", k=12, layer=-2),
        train=TrainConfig(use_cached_features=False),
    )


def gervasio_7b_cls() -> RunConfig:
    """Gervásio 7B (LLaMA-2, untied head) with the CLS-1 bridge (Table 5.3)."""
    return RunConfig(model=ModelConfig(llm=GERVASIO, bridge="cls", k=1))


def gptneo_1b3_en_cls() -> RunConfig:
    """The English baseline of Table 5.3: GPT-Neo 1.3B, CLS-1."""
    return RunConfig(model=ModelConfig(llm=GPT_NEO_EN, bridge="cls", k=1))


def gemma_2b_crossattn12() -> RunConfig:
    """Best ablation of chapter 7 (Table 7.21): Gemma-2B, CrossAtt k = 12, layer L-1."""
    return RunConfig(
        model=ModelConfig(llm=GEMMA_2B, bridge="crossattn", k=12, layer=-2),
        train=TrainConfig(use_cached_features=False),
    )


PRESETS = {
    "gloria_1b3_cls": gloria_1b3_cls,
    "gloria_1b3_crossattn12": gloria_1b3_crossattn12,
    "gervasio_7b_cls": gervasio_7b_cls,
    "gptneo_1b3_en_cls": gptneo_1b3_en_cls,
    "gemma_2b_crossattn12": gemma_2b_crossattn12,
}


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
