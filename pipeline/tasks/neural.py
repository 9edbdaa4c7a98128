"""Neural scores: QE (e.g. CometKiwi) of every translated string per engine, COMET (e.g. COMET-22) of every
engine's gold-set translations.  Both only run when the profile names a model ([curate] qe_model,
comet_model); both go through the score caches (translation.qe_store), so a rerun computes nothing.
"""
from __future__ import annotations

import json

import luigi
import polars as pl

from pipeline.io import write_json_atomic, write_parquet_atomic
from pipeline.memory_files import memory_view
from pipeline.tasks.base import PtvlTask, log
from pipeline.tasks.translate import Translate
from ptvl_io.progress import ProgressReporter
from translation.gold import load_gold
from translation.neural_scoring import score_cached
from translation.qe_store import NeuralScoreStore
from translation.runner import translations_for
from translation.textkey import text_hash

# The gold table's row for the gold set's own PT-BR side (as in the chrF/BLEU table of the comparison).
GOLD_PT_BR = "(yardstick) gold PT-BR variant"


def _model_id(model: str) -> str:
    from translation.comet.checkpoint import resolve_model_folder  # deferred: imports torch

    return resolve_model_folder(model)[1]


def _loader(model: str, device: str):
    def load():
        from translation.comet import load_comet  # deferred: torch and transformers, only when scoring

        log.info("loading COMET model %s on %s", model, device)
        return load_comet(model, device)
    return load


def _score(rows: pl.DataFrame, store_path, engine_id: str, model: str, model_id: str, label: str, settings):
    c = settings.curate
    with NeuralScoreStore(store_path) as store, ProgressReporter(label, None, unit="strings") as bar:
        def progress(done: int, total: int) -> None:
            bar.set_total(total)
            bar.update(done)

        return score_cached(rows, store, engine_id, model_id, _loader(model, c.neural_device),
                            batch_size=c.neural_batch_size, progress=progress)


class QEScores(PtvlTask):
    """QE of every distinct translated string of one engine under [curate] qe_model: qe.parquet
    (text_hash, qe), then _QE.json (what was computed and what came from the cache)."""
    preload = ("translation.comet", "transformers.modeling_utils")

    engine = luigi.Parameter()

    def requires(self):
        return [Translate(config=self.config, dataset=d, split=sp, engine=self.engine)
                for d, sp in self.settings.datasets.splits()]

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.layout.qe_summary(str(self.engine))))

    def complete(self) -> bool:
        # Another qe_model in the profile scores again (into the same cache, under the new model's id).
        if not super().complete():
            return False
        return json.loads(open(self.output().path).read()).get("model") == self.settings.curate.qe_model

    def run(self) -> None:
        engine, model = str(self.engine), self.settings.curate.qe_model
        if model is None:
            raise RuntimeError("QEScores needs [curate] qe_model")
        frames = [pl.read_parquet(t.output().path, columns=["text_hash", "text_en", "text_pt", "engine_id"])
                  for t in self.requires()]
        rows = pl.concat(frames).filter(pl.col("text_pt").is_not_null()).unique("text_hash", maintain_order=True)
        engine_id = rows["engine_id"][0] if rows.height else engine
        model_id = _model_id(model)
        run = _score(rows.select("text_hash", pl.col("text_en").alias("src"), pl.col("text_pt").alias("mt")),
                     self.layout.qe_store(engine), engine_id, model, model_id, f"QE {engine}", self.settings)
        write_parquet_atomic(self.layout.qe_scores(engine),
                             run.scores.select("text_hash", pl.col("score").alias("qe")).to_arrow())
        log.info("QE %s: %d strings, %d computed, %d from the cache", engine, run.scores.height, run.computed,
                 run.cached)
        write_json_atomic(self.output().path, {"model": model, "model_id": model_id, "engine_id": engine_id,
                                               "strings": run.scores.height, "computed": run.computed,
                                               "cached": run.cached})


class GoldComet(PtvlTask):
    """COMET of every translating engine's gold-set translations against the gold PT-PT, plus the gold
    PT-BR side as a yardstick: gold_comet.parquet (engine, id, comet), then _GOLD_COMET.json."""
    preload = ("translation.comet", "transformers.modeling_utils")

    def requires(self):
        s = self.settings
        return [Translate(config=self.config, dataset=d, split=sp, engine=e)
                for e in s.translate.engines for d, sp in s.datasets.splits()]

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.layout.gold_comet_summary))

    def complete(self) -> bool:
        if not super().complete():
            return False
        return json.loads(open(self.output().path).read()).get("model") == self.settings.curate.comet_model

    def run(self) -> None:
        s = self.settings
        model = s.curate.comet_model
        if model is None:
            raise RuntimeError("GoldComet needs [curate] comet_model")
        gold = load_gold()
        hashes = [text_hash(en) for en in gold["en"].to_list()]
        systems: dict[str, tuple[str, list[str]]] = {GOLD_PT_BR: (GOLD_PT_BR, gold["pt_br"].to_list())}
        for engine in s.translate.engines:
            if not s.engines[engine].translates:
                continue  # an imported memory holds no gold translations
            first = next(t for t in self.requires() if t.engine == engine)
            engine_id = json.loads(open(self.layout.split_stats(engine, first.dataset, first.split)).read())["engine_id"]
            with memory_view(self.root, engine) as mem:
                systems[engine] = (engine_id, [r.text_pt or "" for r in translations_for(gold["en"].to_list(),
                                                                                          engine_id, mem)])
        model_id = _model_id(model)
        out, summary = [], {}
        for name, (engine_id, hyps) in systems.items():
            rows = pl.DataFrame({"text_hash": hashes, "src": gold["en"], "mt": hyps, "ref": gold["pt_pt"]})
            run = _score(rows, self.layout.gold_comet_store, engine_id, model, model_id, f"COMET gold {name}", s)
            out.append(pl.DataFrame({"engine": name, "id": gold["id"], "text_hash": hashes})
                       .join(run.scores.rename({"score": "comet"}), on="text_hash", how="left")
                       .drop("text_hash"))
            summary[name] = {"computed": run.computed, "cached": run.cached}
        write_parquet_atomic(self.layout.gold_comet, pl.concat(out).to_arrow())
        write_json_atomic(self.output().path, {"model": model, "model_id": model_id, "systems": summary})
