"""The V-Glória train loop, one linear recipe: setup, (resume), train, checkpoint, card. Runs alone or under torchrun."""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from ptvl_io.progress import ProgressReporter
from training import checkpoint as ckpt
from training import distributed
from training.bridges import build_bridge
from training.config import (
    ModelConfig,
    RunConfig,
    RunInputs,
    TrainConfig,
    read_run_toml,
    same_model,
    write_run_toml,
)
from training.data import BatchPlan, CaptionData, MicroBatch, StepBatches, step_loader
from training.features import FeatureStore, to_pixels
from training.model import Feats, VGloria, clip_preprocess, feature_stats, resolve_compile, vgloria
from training.modelcard import write_model_card

EvalFn = Callable[[VGloria, int], dict[str, float]]


class NonFiniteLoss(RuntimeError):
    """The loss or the gradient norm became NaN/inf; the run stopped and the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int  # optimizer steps done
    losses: dict[int, float]  # total loss per step run in this call (rank 0 view; mean over micro-batches)
    parts: dict[int, dict[str, float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    trainable_params: int = 0
    model: VGloria | None = None


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up, then constant or cosine down to min_lr_ratio."""

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


def expected_trainable(model: VGloria) -> int:
    """What must train, counted from the parts (not from requires_grad): the setup assertion's reference."""
    n = sum(p.numel() for p in model.bridge.parameters())
    n += model.d * (1 if model.tied else 2)  # [RET] input row (+ output row for untied heads)
    n += sum(p.numel() for p in model.text_fc.parameters()) + sum(p.numel() for p in model.image_fc.parameters())
    return n + 1  # logit scale


@torch.no_grad()
def after_step(model: VGloria, model_cfg: ModelConfig) -> None:
    """What follows each optimizer step: the logit scale clamped in place to [0, log max] (as CLIP: inside
    the forward a clamp would zero its gradient above the bound, and it could never come back down), and in
    the fromage recipe the [RET] rows rescaled to the frozen rows' mean norm."""
    model.logit_scale.clamp_(0.0, math.log(model_cfg.logit_scale_max))
    if model_cfg.recipe == "fromage":
        model.renorm_ret_rows()


def feature_source(model: VGloria, features_dir: Path | None, use_cache: bool,
                   device: torch.device) -> tuple[Callable[[MicroBatch], Feats], bool]:
    """Cached features when the cache serves the bridge's needs, else the frozen encoder online.
    Returns the function and whether it runs online (so batches must carry preprocessed pixels)."""
    needs = model.bridge.needs()
    if use_cache and features_dir is not None:

        store = FeatureStore(features_dir)
        if store.has(needs):
            def cached(mb: MicroBatch) -> Feats:
                f = store.features(mb.image_ids, needs)
                return {k: {layer: t.to(device, non_blocking=True) for layer, t in d.items()} for k, d in f.items()}

            return cached, False
    if model.visual is None:
        raise ValueError(f"bridge needs {needs}: not in the feature cache {features_dir}, and no CLIP loaded")
    return (lambda mb: model.encode_images(mb.pixels.to(device, non_blocking=True))), True


def train(model_cfg: ModelConfig, train_cfg: TrainConfig, shards: Sequence[Path], run_dir: Path,
          features_dir: Path | None = None, progress: bool = True, *, device: str | None = None,
          eval_fn: EvalFn | None = None, data_note: str = "", root: Path | None = None,
          profile: Path | None = None) -> TrainResult:
    """Train (or resume, if run_dir holds checkpoints) a V-Glória bridge. Rank 0 writes everything.
    `root` and `profile` (the pipeline run root and profile, when there is one) are recorded in run.toml."""
    run_dir = Path(run_dir)
    d = distributed.setup(device)
    torch.manual_seed(train_cfg.seed)
    # run.toml records the settings as resolved on this device, so a rerun from it does the same.
    model_cfg = model_cfg.model_copy(update={
        "compile": resolve_compile(model_cfg, d.device),
        "fused_pass": model_cfg.fused_pass if model_cfg.fused_pass is not None else d.device.type == "cuda"})
    shard_paths = [Path(s).resolve() for s in shards]
    inputs = RunInputs(shards=[str(s) for s in shard_paths], shard_bytes=[s.stat().st_size for s in shard_paths],
                       features=str(Path(features_dir).resolve()) if features_dir is not None else None,
                       device=device, run_dir=str(run_dir.resolve()),
                       root=str(Path(root).resolve()) if root is not None else None,
                       profile=str(profile) if profile is not None else None)
    cfg = RunConfig(model=model_cfg, train=train_cfg, inputs=inputs)

    # ---- model: frozen LLM (+ CLIP unless every feature comes from the cache)
    store = None
    if train_cfg.use_cached_features and features_dir is not None:

        store = FeatureStore(features_dir)
    need_clip = store is None or not _cache_serves(model_cfg, store)
    model = vgloria(model_cfg, d.device, vis_dim=store and store.width, n_tokens=store and store.n_tokens,
                    load_visual=need_clip, seed=train_cfg.seed)
    params = [p for _, p in model.trainable_parameters()]
    n_trainable = sum(p.numel() for p in params)
    assert n_trainable == expected_trainable(model), (n_trainable, expected_trainable(model))
    assert not any(p.requires_grad for p in model.lm.parameters()), "the LLM must stay frozen"
    optimizer = torch.optim.AdamW(params, lr=train_cfg.lr, betas=train_cfg.betas,
                                  weight_decay=train_cfg.weight_decay, fused=d.device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(train_cfg))

    # ---- data
    data = CaptionData(shards, model.tokenize)
    plan = BatchPlan(data.lengths, train_cfg.batch_size, train_cfg.seed, train_cfg.bucket_by_length,
                     train_cfg.bucket_pool)
    feats_of, online = feature_source(model, features_dir, train_cfg.use_cached_features, d.device)
    preprocess = _preprocess(model_cfg) if online else None

    # ---- resume
    start = 0
    last = ckpt.latest_checkpoint(run_dir)
    if last is None and model_cfg.feature_norm != "none":
        model.set_feature_stats(_sample_stats(data, plan, feats_of, preprocess, train_cfg.batch_size))
    if last is not None:
        state = ckpt.load_checkpoint(last)
        if state.get("feature_stats"):
            model.set_feature_stats(state["feature_stats"])
        if not same_model(state["config"]["model"], cfg.model_dump(mode="json")["model"]):
            raise ValueError(f"{last}: checkpoint was trained with a different model config; use a new run folder")
        model.load_trainable_state_dict(state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        start = state["step"]

    dataset = StepBatches(data, plan, start=start, steps=train_cfg.steps, rank=d.rank, world=d.world,
                          micro_batch_size=train_cfg.micro_batch_size, concat_prob=model_cfg.concat_prob,
                          seed=train_cfg.seed, preprocess=preprocess, recipe=model_cfg.recipe)

    net: torch.nn.Module = model
    if d.world > 1:

        # The frozen LLM/CLIP are identical on every rank: skip broadcasting gigabytes at start-up.
        DDP._set_params_and_buffers_to_ignore_for_model(
            model, [n for n, p in model.named_parameters() if not p.requires_grad]
            + [n for n, _ in model.named_buffers()])
        net = DDP(model, device_ids=[d.device] if d.device.type == "cuda" else None)

    writer = None
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_toml(cfg, run_dir / "run.toml", header="V-Glória run; `ptvl train --config run.toml` reproduces it")
        from torch.utils.tensorboard import (
            SummaryWriter,  # deferred: tensorboard loads only when a run writes curves
        )

        writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start)

    result = TrainResult(run_dir, start, {}, trainable_params=n_trainable, model=model,
                         checkpoint=last)
    amp = d.device.type == "cuda" and model_cfg.dtype != "fp32"

    def save(step: int) -> Path:
        payload = {"trainable": model.trainable_state_dict(), "optimizer": optimizer.state_dict(),
                   "scheduler": scheduler.state_dict(), "rng": ckpt.rng_state(), "step": step,
                   "data_position": {"step": step, "epoch": step // plan.per_epoch, "seed": train_cfg.seed},
                   "config": cfg.model_dump(mode="json"), "trainable_params": n_trainable,
                   "feature_stats": model.feature_stats}
        return ckpt.save_checkpoint(run_dir, step, payload, keep=train_cfg.keep_checkpoints)

    bar = _Progress(train_cfg.steps, start, enabled=progress and d.main)
    try:
        t0, tokens = time.perf_counter(), 0
        for step, micro in enumerate(step_loader(dataset, train_cfg.num_workers), start=start):
            parts = {"total": 0.0, "caption": 0.0, "ret_ce": 0.0, "i2t": 0.0, "t2i": 0.0}
            for i, mb in enumerate(micro):
                sync = i == len(micro) - 1 or d.world == 1
                ctx = net.no_sync() if (d.world > 1 and not sync) else _null()
                with ctx, torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=amp):
                    losses = net(feats_of(mb), mb.caps, mb.partner)
                    (losses.total / len(micro)).backward()
                for k, v in losses.as_floats().items():
                    parts[k] += v / len(micro)
                tokens += losses.caption_tokens
            if d.world > 1:  # log the mean over ranks (InfoNCE is already global; caption CE is per rank)
                parts = distributed.mean_over_ranks(parts, d)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, train_cfg.grad_clip)
            finite = math.isfinite(parts["total"]) and bool(torch.isfinite(grad_norm))
            if not distributed.all_true(finite, d):
                raise NonFiniteLoss(f"non-finite loss or gradient at step {step + 1} "
                                    f"(loss {parts['total']}); last good checkpoint: {result.checkpoint}")
            optimizer.step()
            after_step(model, model_cfg)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            result.step, result.losses[done], result.parts[done] = done, parts["total"], parts
            lr = scheduler.get_last_lr()[0]
            if d.main and (done % train_cfg.log_every == 0 or done == train_cfg.steps):
                dt = time.perf_counter() - t0
                tps = tokens * d.world / dt
                for k, v in parts.items():
                    writer.add_scalar(f"loss/{k}", v, done)
                writer.add_scalar("lr", lr, done)
                writer.add_scalar("grad_norm", float(grad_norm), done)
                writer.add_scalar("logit_scale", float(model.logit_scale.detach().exp()), done)
                writer.add_scalar("throughput/tokens_per_s", tps, done)
                t0, tokens = time.perf_counter(), 0
            bar.update(done, parts["total"], lr)
            if done % train_cfg.ckpt_every == 0 and done != train_cfg.steps:
                if d.main:
                    result.checkpoint = save(done)
                distributed.barrier(d)
            if eval_fn is not None and train_cfg.eval_every and done % train_cfg.eval_every == 0 and d.main:
                _log_metrics(writer, eval_fn(model, done), done)
        if result.step == train_cfg.steps and d.main:
            if last is None or result.step > start:
                result.checkpoint = save(result.step)
            if eval_fn is not None:
                result.metrics = eval_fn(model, result.step)
                _log_metrics(writer, result.metrics, result.step)

            write_model_card(run_dir, cfg, steps=result.step, trainable_params=n_trainable,
                             data_note=data_note or _describe_shards(shards, len(data)),
                             metrics=result.metrics, final_loss=result.losses.get(result.step))
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        distributed.barrier(d)
    return result


def _sample_stats(data: CaptionData, plan: BatchPlan, feats_of: Callable[[MicroBatch], Feats], preprocess,
                  batch_size: int, n_images: int = 4096):
    """Feature statistics for feature_norm: a fixed, seeded sample of training images (the same on every
    rank and every run with this seed), at most n_images."""

    ids = sorted(set(data.image_ids))
    rows = {iid: i for i, iid in enumerate(data.image_ids)}
    pick = [rows[i] for i in ids[:: max(1, len(ids) // n_images)]]
    chunks = []
    for s in range(0, len(pick), batch_size):
        index = pick[s : s + batch_size]
        pixels = None
        if preprocess is not None:

            pixels = to_pixels(data.image_bytes(index), preprocess)
        chunks.append(feats_of(MicroBatch(index, [data.image_ids[i] for i in index], [], [], pixels)))
    merged = {k: {layer: torch.cat([c[k][layer] for c in chunks]) for layer in chunks[0][k]} for k in chunks[0]}
    return feature_stats(merged)


def _cache_serves(model_cfg: ModelConfig, store) -> bool:
    """Whether the feature cache alone has what this bridge needs (built on the meta device: no weights)."""

    with torch.device("meta"):
        bridge = build_bridge(model_cfg.bridge, vis_dim=store.width, llm_dim=8, k=model_cfg.k,
                              layer=model_cfg.layer, n_tokens=store.n_tokens, **model_cfg.bridge_kwargs)
    return store.has(bridge.needs())


def _preprocess(model_cfg: ModelConfig):

    return clip_preprocess(model_cfg)


def _describe_shards(shards: Sequence[Path], n: int) -> str:
    names = sorted({Path(s).parent.as_posix() for s in shards})
    return f"{n:,} (image, caption) pairs from {len(shards)} shard file(s) under {', '.join(names)}"


def _log_metrics(writer, metrics: dict[str, float], step: int) -> None:
    if writer is not None:
        for k, v in metrics.items():
            writer.add_scalar(f"eval/{k}", v, step)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


class _Progress:
    """Train progress with loss, lr and steps/s: a bar on a terminal, periodic log lines without one
    (ptvl_io.progress); a no-op when disabled (ranks > 0, tests)."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.p = None
        if enabled:

            self.p = ProgressReporter("train", total, completed=start, unit="steps",
                                      fields_fmt="loss {loss:.4f} lr {lr:.2e} {rate:.2f} steps/s",
                                      fields={"loss": float("nan"), "lr": 0.0, "rate": 0.0})
            self.t, self.last = time.perf_counter(), start

    def update(self, step: int, loss: float, lr: float) -> None:
        if self.p is not None:
            now = time.perf_counter()
            rate = (step - self.last) / max(now - self.t, 1e-9)
            self.p.update(step, loss=loss, lr=lr, rate=rate)
            self.t, self.last = now, step

    def close(self) -> None:
        if self.p is not None:
            self.p.close()


def load_run(run_dir: Path, device: str = "cpu", *, load_visual: bool = True, vis_dim: int | None = None,
             n_tokens: int | None = None, checkpoint: Path | None = None) -> VGloria:
    """Rebuild a trained model from run.toml and its newest (or the given) checkpoint: for eval and the demo."""

    cfg = read_run_toml(Path(run_dir) / "run.toml")
    path = checkpoint or ckpt.latest_checkpoint(run_dir)
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint")
    model = vgloria(cfg.model, device, vis_dim=vis_dim, n_tokens=n_tokens, load_visual=load_visual)
    state = ckpt.load_checkpoint(path)
    model.load_trainable_state_dict(state["trainable"])
    if state.get("feature_stats"):
        model.set_feature_stats(state["feature_stats"])
    return model.eval()
