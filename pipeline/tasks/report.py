"""The final report: one page that links everything a run produced and shows the headline numbers."""
from __future__ import annotations

import io
import json
from pathlib import Path

import luigi
import polars as pl

from eval.tables import format_metric
from pipeline.io import write_bytes_atomic, write_text_atomic
from pipeline.tasks.base import PtvlTask
from pipeline.tasks.curate import CompareTranslators
from pipeline.tasks.model import Evaluate, Train
from ptvl_io.formatting import md_cell
from training.modelcard import refresh_model_card


def training_curves(run_dir: Path) -> tuple[bytes, dict[str, list[tuple[int, float]]]]:
    """PNG of the loss curves logged to TensorBoard, and the series themselves."""
    import matplotlib  # deferred: matplotlib loads only to draw the report's curves

    matplotlib.use("Agg")

    import matplotlib.pyplot as plt  # deferred: matplotlib loads only to draw the report's curves
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,  # deferred: tensorboard loads only to read the report's curves
    )

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    series = {
        tag: [(e.step, e.value) for e in acc.Scalars(tag)]
        for tag in acc.Tags().get("scalars", [])
        if tag.startswith("loss/")
    }
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    for tag, points in sorted(series.items()):
        ax.plot([p[0] for p in points], [p[1] for p in points], label=tag.removeprefix("loss/"))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("V-Glória training losses")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue(), series


def write_quarantine_report(root: Path, splits: list[tuple[str, str]], dest: Path, examples: int = 5) -> int:
    """reports/quarantine.md: the source rows each reader set aside (sources/<dataset>/<split>/quarantine.parquet),
    counted by reason, with a few examples each.  Returns the number of rows; writes nothing when no split
    has a quarantine file (so the report links it only when it exists)."""

    found = [(d, sp, root / "sources" / d / sp / "quarantine.parquet") for d, sp in splits]
    found = [(d, sp, p) for d, sp, p in found if p.exists()]
    if not found:
        return 0
    total = 0
    lines = ["# Source rows set aside by the readers", "",
             "Each row a reader could not use is kept with its reason in "
             "`sources/<dataset>/<split>/quarantine.parquet` (line = 1-based TSV line or JSON record index). "
             "The run goes on without them.", ""]
    for d, sp, path in found:
        q = pl.read_parquet(path)
        total += q.height
        lines += [f"## {d}/{sp}: {format_metric('n', q.height)} rows", ""]
        if q.height == 0:
            lines += ["Nothing was quarantined.", ""]
            continue
        counts = q.group_by("reason").len().sort(["len", "reason"], descending=[True, False])
        lines += ["| reason | rows | examples (line: detail) |", "|---|---|---|"]
        for reason, n in counts.iter_rows():
            ex = q.filter(pl.col("reason") == reason).sort("line").head(examples)
            shown = "; ".join(f"{line}: {' '.join((detail or '').split())[:80]}" for line, detail in
                              ex.select("line", "detail").iter_rows())
            lines.append(f"| {md_cell(reason)} | {n:,} | {md_cell(shown)} |")  # details quote the sources
        lines.append("")
    write_text_atomic(dest, "\n".join(lines))
    return total


class FinalReport(PtvlTask):
    """reports/README.md: availability, translator comparison, token statistics, shards, training, evaluation."""
    preload = ("eval.benchmarks", "eval.report_tables")

    def requires(self):
        return {
            "compare": CompareTranslators(config=self.config),
            "train": Train(config=self.config),
            "eval": {b: Evaluate(config=self.config, benchmark=b) for b in self.settings.eval.benchmarks},
        }

    def output(self) -> luigi.LocalTarget:
        return self.target("reports", "README.md")

    def run(self) -> None:
        from eval.benchmarks import collect_runs  # deferred: imports torch
        from eval.report_tables import render_run_tables  # deferred: imports torch (common-subset re-scoring)

        s = self.settings
        reports = self.root / "reports"
        train = self.requires()["train"]
        run_dir = train.run_dir()

        # Evaluations running side by side each rewrite the card; the last one may not have seen the
        # others' metrics.json yet.  Once all are done, write it once more with all of them.
        refresh_model_card(run_dir)
        png, series = training_curves(run_dir)
        write_bytes_atomic(reports / "training_curves.png", png)
        done = json.loads(Path(train.output().path).read_text())
        runs = collect_runs([run_dir], expected=s.eval.benchmarks)
        metrics = runs[0]["metrics"]

        # Link only what this run actually wrote: a profile without COCO val has no coco/val card.
        def link(label: str, path: Path) -> str | None:
            return f"[{label}]({path.relative_to(reports).as_posix()})" if path.exists() else None

        def link_up(label: str, path: Path) -> str | None:
            return f"[{label}](../{path.relative_to(self.root).as_posix()})" if path.exists() else None

        quarantine = write_quarantine_report(self.root, s.datasets.splits(), reports / "quarantine.md")
        data_links = [
            link("Image availability (thesis Table 4.1) and lost URLs by reason", reports / "availability.md"),
            " — ".join(x for x in (link("Translator comparison (HTML, self-contained)",
                                        reports / "compare" / "comparison.html"),
                                   link("Markdown", reports / "compare" / "comparison.md")) if x) or None,
            link("Token statistics (thesis Table 5.2)", reports / "token_stats.md"),
            link(f"Source rows the readers quarantined ({quarantine:,}), by reason", reports / "quarantine.md"),
        ]
        cards = [link_up(f"{e}/{d}/{sp}", self.root / "shards" / e / d / sp / "README.md")
                 for e in s.translate.engines for d, sp in s.datasets.splits()]
        cards = [c for c in cards if c]
        if cards:
            data_links.append("Dataset cards: " + ", ".join(cards))
        run_rel = run_dir.relative_to(self.root).as_posix()
        card = link_up("model card", run_dir / "README.md")
        lines = [
            f"# ptvl run `{s.run.name}`",
            "",
            f"Profile `{s.config_path}`; everything below lives under `{self.root}`.",
            "",
            "## Data",
            "",
            *[f"- {x}" for x in data_links if x],
            "",
            "## Training",
            "",
            f"Run folder `{run_rel}` ({card + ', ' if card else ''}`run.toml` reproduces it). "
            f"{done['steps']:,} steps, {done['trainable_params']:,} trainable parameters; "
            f"loss {done['loss_first']:.3f} (first step) -> {done['loss_last']:.3f} (last).",
            "",
            "![training curves](training_curves.png)",
            "",
            "## Evaluation",
            "",
        ]
        for bench, m in sorted(metrics.items()):
            shown = ", ".join(f"{k} {format_metric(k, v)}" for k, v in m.items() if isinstance(v, int | float))
            lines.append(f"- **{bench}**: {shown} ({link_up('metrics', run_dir / 'eval' / bench / 'metrics.json')})")
        lines.append("")
        # The same tables as `ptvl table` (one loop, eval.report_tables), plus COCO's retrieval ablation.
        lines.append(render_run_tables(runs, ablations=(("coco", "captioning"), ("coco", "retrieval"))))
        pages = sorted((run_dir / "eval").glob("*/*.html"))
        if pages:
            lines += ["Qualitative pages: " + ", ".join(link_up(f"{p.parent.name}/{p.name}", p) for p in pages), ""]
        lines += [
            "Numbers are fractions in the list above and x100 in the tables. METEOR `en` is `-l en -norm` "
            "(comparable with the thesis), `pt` is `-l pt -lower`. Each table names its tie rule (R@k: expected "
            "value under random tie-breaking, pessimistic value in parentheses) and VQA answer-matching mode.",
            "",
        ]
        write_text_atomic(self.output().path, "\n".join(lines))
        write_text_atomic(reports / "training_losses.json", json.dumps(series))
