"""Curation stages: token statistics (thesis Table 5.2) and the translator comparison report."""
from __future__ import annotations

import json

import luigi
import polars as pl

from pipeline.billing import billing_summary
from pipeline.human_review import digest_for, review_figures
from pipeline.io import write_json_atomic, write_parquet_atomic, write_text_atomic
from pipeline.memory_files import memory_view
from pipeline.reports.compare import render_comparison
from pipeline.reports.decision import SAMPLE_NOTE
from pipeline.reports.neural_scores import NeuralSection, neural_section
from pipeline.tasks.base import PtvlTask
from pipeline.tasks.neural import GoldComet, QEScores
from pipeline.tasks.translate import Translate
from pipeline.translate_plan import latest_parts
from translation.gold import load_gold
from translation.overlay import empty_digest
from translation.runner import translations_for
from translation.scoring import compare_on_gold
from translation.tokstats import render_table_5_2, token_stats

# The comparison's gold-score row for the gold set's own PT-BR side (not an engine; see CompareTranslators).
GOLD_PT_BR_ROW = "(yardstick) gold PT-BR variant"


def _translate_tasks(task: PtvlTask) -> dict[tuple[str, str, str], Translate]:
    s = task.settings
    return {
        (e, d, sp): Translate(config=task.config, dataset=d, split=sp, engine=e)
        for e in s.translate.engines
        for d, sp in s.datasets.splits()
    }


class TokenStats(PtvlTask):
    """Samples, tokens and tokens per sample per dataset, split and engine, English alongside."""

    def requires(self):
        return _translate_tasks(self)

    def output(self) -> luigi.LocalTarget:
        return self.target("reports", "token_stats.md")

    def run(self) -> None:
        c = self.settings.curate
        paths = [t.output().path for t in self.requires().values()]
        stats = token_stats(paths, tokenizer=c.tokenizer, drop_flags=tuple(self.settings.shards.default_policy.drop))
        write_parquet_atomic(self.layout.token_stats, stats.to_arrow())
        unit = f"tokens of `{c.tokenizer}`" if c.tokenizer else "word-level tokens (whitespace words, as the thesis counts)"
        write_text_atomic(
            self.output().path,
            f"# Token statistics (thesis Table 5.2)\n\nUnit: {unit}. Engine columns leave out rows the default "
            f"filter policy drops ({', '.join(self.settings.shards.default_policy.drop)}).\n\n"
            + render_table_5_2(stats)
            + "\n",
        )


_NEURAL_OFF = {"comet_model": None, "qe_model": None}


def _neural_models(task: PtvlTask) -> dict[str, str | None]:
    c = task.settings.curate
    return {"comet_model": c.comet_model if c.gold else None, "qe_model": c.qe_model}


def _neural_section(task: PtvlTask, gold_scores: dict[str, dict]) -> NeuralSection:
    s, layout = task.settings, task.layout
    qe = {e: pl.read_parquet(layout.qe_scores(e)) for e in s.translate.engines} if s.curate.qe_model else {}
    comet = pl.read_parquet(layout.gold_comet) if s.curate.comet_model and s.curate.gold else None
    return neural_section(comet_model=s.curate.comet_model, qe_model=s.curate.qe_model, gold_comet=comet,
                          gold_scores=gold_scores, qe=qe, min_qe=s.shards.min_qe)


class CompareTranslators(PtvlTask):
    """One self-contained HTML report (plus Markdown) comparing every configured engine."""

    def requires(self):
        c = self.settings.curate
        needs = {"translated": _translate_tasks(self), "tokens": TokenStats(config=self.config)}
        if c.qe_model:
            needs["qe"] = {e: QEScores(config=self.config, engine=e) for e in self.settings.translate.engines}
        if c.comet_model and c.gold:
            needs["comet"] = GoldComet(config=self.config)
        return needs

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.layout.comparison_html))

    def _review_record(self):
        return self.layout.compare_dir / "review.json"

    def complete(self) -> bool:
        # A review (ptvl review: flag verdicts, corrections, gold rows) since the report re-runs it; a report
        # written before the overlay existed stays complete while the run has no review.
        if not super().complete():
            return False
        record = self._review_record()
        data = json.loads(record.read_text()) if record.exists() else {}
        # A neural model switched on (or changed) since the report re-runs it, as a review does.
        if data.get("neural", _NEURAL_OFF) != _neural_models(self):
            return False
        return data.get("digest", empty_digest()) == digest_for(self.root, None)

    def run(self) -> None:
        s = self.settings
        translated: dict[str, list[pl.DataFrame]] = {}
        run_stats: dict[str, list[dict]] = {}
        for (engine, dataset, split), task in self.requires()["translated"].items():
            translated.setdefault(engine, []).append(pl.read_parquet(task.output().path))
            side = self.layout.split_stats(engine, dataset, split)
            run_stats.setdefault(engine, []).append(json.loads(side.read_text()))

        gold = load_gold() if s.curate.gold else None
        gold_hyps, billing, throughput, truncation = {}, {}, {}, {}
        for engine, stats in run_stats.items():
            if s.engines[engine].translates:  # imports have no engine to cut; DeepL never cuts (0)
                cut = [st.get("input_truncated") or {} for st in stats]
                truncation[engine] = {"rows": sum(st["rows"] for st in stats),
                                      "truncated": sum(c.get("rows", 0) for c in cut),
                                      "unique": sum(c.get("unique", 0) for c in cut)}
            entry = s.engines[engine]
            engine_id = stats[0]["engine_id"]
            parts = latest_parts(self.root, engine, s.translate.parts)
            with memory_view(self.root, entry.engine_id(engine)) as mem:
                # The gold set is in every translating engine's unique-string table, so its parts
                # translated (and billed) it once with everything else; here it is only looked up.
                if gold is not None and entry.translates:
                    gold_hyps[engine] = [r.text_pt for r in translations_for(gold["en"].to_list(), engine_id, mem)]
                ids = {engine_id, parts[0].get("context_engine_id")} - {None}
                stored = sum(mem.stats(i).billed_chars for i in ids)
            summary = billing_summary(self.root, engine, entry.engine_id(engine))
            # Same basis as DeepL's count (this run's part attempts); a memory filled before the audit
            # existed falls back to its stored billed characters.
            chars = summary.memory_chars if summary else stored
            deepl = summary.deepl_chars if summary else None
            billing[engine] = {"chars": chars, "deepl_chars": deepl,
                               "twice_chars": summary.possibly_twice_chars if summary else 0,
                               "paid_twice": summary.paid_twice if summary else 0,
                               "warning": summary.warning(engine) if summary else None,
                               "eur": (deepl if deepl is not None else chars) / 1e6 * entry.price_per_million()}
            sent = sum(p["sent"] for p in parts)
            seconds = sum(p["seconds"] for p in parts)
            if sent and seconds:
                throughput[engine] = sent / seconds
        gold_scores = {}
        if gold is not None:
            # A yardstick row: the gold set's own PT-BR side scored as if it were a translator, i.e. what
            # a fluent translation in the wrong variety gets. Engines far below it are not just "Brazilian".
            # One paired bootstrap for all: each engine's interval, and its p-value against the best engine.
            gold_scores = compare_on_gold(gold_hyps, gold["pt_pt"].to_list(),
                                          yardsticks={GOLD_PT_BR_ROW: gold["pt_br"].to_list()})
        tables = {e: pl.concat(f, how="vertical_relaxed") for e, f in translated.items()}
        # Flag verdicts and reviewed gold rows, against the machine output and flags (never the human text).
        review = review_figures(self.root, tables)
        render_comparison(
            self.layout.compare_dir,
            translated=tables,
            token_stats=pl.read_parquet(self.layout.token_stats),
            gold_scores=gold_scores,
            billing=billing,
            throughput=throughput,
            seed=s.curate.seed,
            thresholds=s.quality,
            truncation=truncation,
            scoring=s.eval.settings.scoring_labels(),
            review=review,
            neural=_neural_section(self, gold_scores),
            drop={e: s.shards.policy_for(e).drop for e in tables},
            note=SAMPLE_NOTE if s.sample.enabled else None,
        )
        # After the report: a kill in between leaves the old digest, so the next run redoes the report.
        write_json_atomic(self._review_record(), {**review, "neural": _neural_models(self)})
