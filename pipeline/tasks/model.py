"""Model stages: sample models (tiny CLIP + tiny PT LM), CLIP feature caches, training and evaluation."""
from __future__ import annotations

import re
from pathlib import Path

import luigi
import polars as pl

from eval.failures import clear_failure, write_failure
from pipeline.io import write_json_atomic
from pipeline.tasks.base import PtvlTask, log
from pipeline.tasks.shards import BuildShards, shard_dir
from ptvl_io.progress import ProgressReporter, stage_progress


def _expand(value: str, task: PtvlTask) -> str:
    """{models} is the run's models folder (the sample's tiny LM and CLIP are built there)."""
    return value.replace("{models}", str(task.root / "models"))


def model_config(task: PtvlTask):
    m = task.settings.model
    return m.model_copy(update={"llm": _expand(m.llm, task), "clip": _expand(m.clip, task)})


def clip_slug(task: PtvlTask) -> str:
    """Feature folders are named for the CLIP that made them."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model_config(task).clip).name or "clip")


def _data_sets(task: PtvlTask) -> list[tuple[str, str]]:
    return [tuple(x.split("/", 1)) for x in task.settings.training.data]


# What the model tasks import (see PtvlTask.preload): transformers' model code takes longest (~4 s).
_MODELS = ("torch", "transformers.modeling_utils", "open_clip")


class PrepareSampleModels(PtvlTask):
    """The embedded sample's frozen models, saved as an open_clip folder and a Hugging Face folder and then
    loaded through exactly the code that loads ViT-L/14 and Glória.

    The tiny PT causal LM is pretrained on the sample's training captions only (never on evaluation
    captions), packed several to a sequence: an LM that has only seen single short captions never
    learns to use later positions, and then cannot read a visual prefix (see training/lm_pretrain.py).
    """
    preload = ("training.features.tiny", "training.lm_pretrain", *_MODELS)

    def requires(self):
        s = self.settings
        return [BuildShards(config=self.config, engine=s.training.engine, dataset=d, split=sp)
                for d, sp in _data_sets(self)]

    def output(self) -> luigi.LocalTarget:
        return self.target("models", "_READY.json")

    def run(self) -> None:
        from training.features.tiny import (  # deferred: imports torch and open_clip
            build_tiny_clip,
            pretrain_tiny_clip,
        )
        from training.lm_pretrain import pretrain_tiny_lm  # deferred: imports torch and transformers

        sm = self.settings.sample_models
        models = self.root / "models"
        shards = pl.concat([
            pl.read_parquet(sorted(shard_dir(self.root, self.settings.training.engine, d, sp).glob("part-*.parquet")),
                            columns=["image_id", "image", "caption", "caption_en"])
            for d, sp in _data_sets(self)
        ])
        build_tiny_clip(models / "tiny-clip", image_size=self.settings.sample.image_size, width=sm.clip_width,
                        layers=sm.clip_layers, patch=sm.clip_patch, seed=self.settings.sample.seed)
        clip_losses: list[float] = []
        if sm.clip_steps:
            # A real CLIP is trained; so is the sample's, briefly, on the training images and their English
            # captions (never on evaluation images), so its features hold shape as well as colour.
            per_image = shards.group_by("image_id", maintain_order=True).agg(pl.col("image").first(),
                                                                             pl.col("caption_en"))
            with ProgressReporter("sample CLIP pretraining", sm.clip_steps, unit="steps",
                                  fields_fmt="loss {loss:.3f}") as bar:
                clip_losses = pretrain_tiny_clip(
                    models / "tiny-clip", list(zip(per_image["image"].to_list(), per_image["caption_en"].to_list(),
                                                   strict=True)),
                    steps=sm.clip_steps, lr=sm.clip_lr, seed=self.settings.sample.seed,
                    progress=lambda step, loss: bar.update(step, loss=loss))
            log.info("tiny CLIP: %d images, contrastive loss %.2f -> %.2f over %d steps", per_image.height,
                     clip_losses[0], clip_losses[-1], len(clip_losses))
        captions: list[str] = shards["caption"].to_list()
        # Documents of `doc_captions` captions: packed context, like the prototype's 6-caption sequences.
        n = sm.doc_captions
        docs = [captions[i:i + n] for i in range(0, len(captions), n)]
        losses: list[float] = []

        def lm_progress(step: int, loss: float) -> None:
            losses.append(loss)
            bar.update(step, loss=loss)

        with ProgressReporter("sample LM pretraining", sm.lm_steps, unit="steps", fields_fmt="loss {loss:.3f}") as bar:
            pretrain_tiny_lm(docs, models / "tiny-lm", hidden=sm.lm_hidden, layers=sm.lm_layers, heads=sm.lm_heads,
                             vocab_size=sm.lm_vocab, seq_len=sm.lm_seq_len, max_positions=sm.lm_max_positions,
                             steps=sm.lm_steps, lr=sm.lm_lr, seed=self.settings.sample.seed, progress=lm_progress)
        log.info("tiny PT LM: %d captions, loss %.2f -> %.2f over %d steps", len(captions), losses[0], losses[-1],
                 len(losses))
        write_json_atomic(self.output().path, {"clip": str(models / "tiny-clip"), "lm": str(models / "tiny-lm"),
                                               "lm_loss_first": losses[0], "lm_loss_last": losses[-1],
                                               "clip_loss_first": clip_losses[0] if clip_losses else None,
                                               "clip_loss_last": clip_losses[-1] if clip_losses else None,
                                               "captions": len(captions)})


def _model_requires(task: PtvlTask) -> list:
    return [PrepareSampleModels(config=task.config)] if task.settings.sample.enabled else []


class CacheFeatures(PtvlTask):
    """CLS features of the configured ViT layers, once per image of one shard folder (fp16)."""
    preload = ("training.features", *_MODELS)

    engine = luigi.Parameter()
    dataset = luigi.Parameter()
    split = luigi.Parameter()

    def requires(self):
        return [BuildShards(config=self.config, engine=self.engine, dataset=self.dataset, split=self.split),
                *_model_requires(self)]

    def folder(self) -> Path:
        return self.root / "features" / clip_slug(self) / str(self.dataset) / str(self.split)

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.folder() / "meta.json"))

    def run(self) -> None:
        from training.features import (  # deferred: imports torch and open_clip
            VisualEncoder,
            cache_features,
            load_clip,
        )

        f = self.settings.features
        mc = model_config(self)
        shards = sorted(shard_dir(self.root, str(self.engine), str(self.dataset), str(self.split)).glob("part-*.parquet"))
        table = pl.read_parquet(shards, columns=["image_id", "image"]).unique("image_id", keep="first", maintain_order=True)
        model, preprocess = load_clip(mc.clip, pretrained=mc.clip_pretrained or None, precision=f.precision)
        enc = VisualEncoder(model, name=mc.clip)
        with ProgressReporter(f"CLIP features {self.dataset}/{self.split}", table.height, unit="images") as bar:
            cache_features(
                zip(table["image_id"].to_list(), table["image"].to_list(), strict=True), enc, preprocess,
                self.folder(), layers=f.layers, tokens=f.tokens, batch_size=f.batch_size,
                progress=bar.update, n_images=table.height, workers=f.workers,  # n: images consumed so far
                overwrite=True,
            )


class Train(PtvlTask):
    """Train the V-Glória bridge on the configured shards (the same function as `ptvl train`)."""
    preload = ("training.train", *_MODELS)

    def requires(self):
        s = self.settings
        deps = [BuildShards(config=self.config, engine=s.training.engine, dataset=d, split=sp)
                for d, sp in _data_sets(self)]
        if s.train.use_cached_features:
            deps += [CacheFeatures(config=self.config, engine=s.training.engine, dataset=d, split=sp)
                     for d, sp in _data_sets(self)]
        return deps + _model_requires(self)

    def run_dir(self) -> Path:
        return self.root / "train" / self.settings.training.run_name

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.run_dir() / "_DONE.json"))

    def run(self) -> None:
        from training.train import train  # deferred: imports torch

        s = self.settings
        sets = _data_sets(self)
        if len(sets) > 1 and s.train.use_cached_features:
            raise ValueError("training on several shard folders with cached features needs one cache per run; "
                             "list one dataset/split in training.data or set train.use_cached_features = false")
        shards = [p for d, sp in sets for p in sorted(shard_dir(self.root, s.training.engine, d, sp).glob("part-*.parquet"))]
        features = None
        if s.train.use_cached_features:
            features = CacheFeatures(config=self.config, engine=s.training.engine, dataset=sets[0][0],
                                     split=sets[0][1]).folder()
        res = train(model_config(self), s.train, shards, self.run_dir(), features_dir=features, progress=True,
                    device=s.training.device, data_note=f"{', '.join(s.training.data)} translated by "
                    f"`{s.training.engine}` ({len(shards)} shard file{'' if len(shards) == 1 else 's'})",
                    root=self.root, profile=Path(self.config))
        losses = res.losses  # step -> loss of the steps run in this call
        first, last = (losses[min(losses)], losses[max(losses)]) if losses else (None, None)
        write_json_atomic(self.output().path, {"steps": res.step, "trainable_params": res.trainable_params,
                                               "loss_first": first, "loss_last": last,
                                               "checkpoint": str(res.checkpoint)})
        clear_failure(self.run_dir())  # an earlier failure of this run is history now

    def on_failure(self, exception: BaseException) -> str:
        """Record the one-line error in train/<run>/_FAILED.json, so the results tables list the run as failed
        (with the benchmarks its profile expected) instead of leaving it out."""
        _record_failure(self.run_dir(), "training", exception, self)
        return super().on_failure(exception)


def _record_failure(folder: Path, stage: str, exception: BaseException, task: PtvlTask) -> None:
    """eval.failures.write_failure, never raising from Luigi's failure hook: a disk that refuses the record
    must not hide the error being reported."""
    try:
        write_failure(folder, stage, exception, expected=task.settings.eval.benchmarks,
                      engine=task.settings.training.engine)
    except OSError as e:
        log.warning("could not record the failure in %s: %s", folder, e)


class Evaluate(PtvlTask):
    """One benchmark of the trained run: metrics.json (with the profile's benchmarks, so a table can tell a
    finished run from a partial one), tables and qualitative pages; a failure leaves its one-line error."""
    preload = ("eval.benchmarks", *_MODELS)

    benchmark = luigi.Parameter()

    def _dataset_split(self) -> tuple[str, str]:
        from eval.benchmarks import BENCHMARK_DATA  # deferred: imports torch

        dataset, splits = BENCHMARK_DATA[str(self.benchmark)]
        enabled = self.settings.datasets.enabled().get(dataset, [])
        split = next((sp for sp in splits if sp in enabled), None)
        if split is None:
            raise ValueError(f"benchmark {self.benchmark} needs {dataset} split {' or '.join(splits)} in [datasets]")
        return dataset, split

    def requires(self):
        dataset, split = self._dataset_split()
        engine = self.settings.training.engine
        deps = {"train": Train(config=self.config),
                "shards": BuildShards(config=self.config, engine=engine, dataset=dataset, split=split)}
        if self.settings.train.use_cached_features:
            deps["features"] = CacheFeatures(config=self.config, engine=engine, dataset=dataset, split=split)
        return deps

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(Train(config=self.config).run_dir() / "eval" / str(self.benchmark) / "metrics.json"))

    def run(self) -> None:
        from eval.benchmarks import evaluate  # deferred: imports torch

        s = self.settings
        dataset, split = self._dataset_split()
        engine = s.training.engine
        req = self.requires()
        with stage_progress(f"eval {self.benchmark}") as progress:
            evaluate(req["train"].run_dir(), str(self.benchmark), shard_dir(self.root, engine, dataset, split),
                     Path(self.output().path).parent, engine=engine, settings=s.eval.settings,
                     features_dir=req["features"].folder() if "features" in req else None,
                     device=s.training.device, progress=progress, expected=s.eval.benchmarks)

    def on_failure(self, exception: BaseException) -> str:
        """Record the one-line error in train/<run>/eval/<benchmark>/_FAILED.json: the tables show the run's
        other results as partial and this benchmark's error."""
        _record_failure(Path(self.output().path).parent, "evaluation", exception, self)
        return super().on_failure(exception)

