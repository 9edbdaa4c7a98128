"""The final report: one page that links everything a run produced and shows the headline numbers."""
from __future__ import annotations

import json
from pathlib import Path

import luigi

from pipeline.io import write_bytes_atomic, write_text_atomic
from pipeline.tasks.base import PtvlTask
from pipeline.tasks.curate import CompareTranslators
from pipeline.tasks.model import Evaluate, Train


def training_curves(run_dir: Path) -> tuple[bytes, dict[str, list[tuple[int, float]]]]:
    """PNG of the loss curves logged to TensorBoard, and the series themselves."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

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


class FinalReport(PtvlTask):
    """reports/README.md: availability, translator comparison, token statistics, shards, training, evaluation."""

    def requires(self):
        return {
            "compare": CompareTranslators(config=self.config),
            "train": Train(config=self.config),
            "eval": {b: Evaluate(config=self.config, benchmark=b) for b in self.settings.eval.benchmarks},
        }

    def output(self) -> luigi.LocalTarget:
        return self.target("reports", "README.md")

    def run(self) -> None:
        from eval.benchmarks import collect_runs
        from eval.tables import ablation_table, table_5_3, table_5_4, table_5_5, table_vqa

        s = self.settings
        reports = self.root / "reports"
        train = self.requires()["train"]
        run_dir = train.run_dir()
        png, series = training_curves(run_dir)
        write_bytes_atomic(reports / "training_curves.png", png)
        done = json.loads(Path(train.output().path).read_text())
        runs = collect_runs([run_dir])
        metrics = runs[0]["metrics"]

        def rel(p: Path) -> str:
            return str(Path(p).relative_to(self.root.resolve()) if Path(p).is_absolute() else p)

        lines = [
            f"# ptvl run `{s.run.name}`",
            "",
            f"Profile `{s.config_path}`; everything below lives under `{self.root}`.",
            "",
            "## Data",
            "",
            "- [Image availability (thesis Table 4.1) and lost URLs by reason](availability.md)",
            "- [Translator comparison (HTML, self-contained)](compare/comparison.html) — "
            "[Markdown](compare/comparison.md)",
            "- [Token statistics (thesis Table 5.2)](token_stats.md)",
            "- Dataset cards: "
            + ", ".join(
                f"[{e}/{d}/{sp}](../shards/{e}/{d}/{sp}/README.md)"
                for e in s.translate.engines
                for d, sp in s.datasets.splits()
            ),
            "",
            "## Training",
            "",
            f"Run folder `{rel(run_dir)}` ([model card](../{rel(run_dir)}/README.md), `run.toml` reproduces it). "
            f"{done['steps']} steps, {done['trainable_params']:,} trainable parameters; "
            f"loss {done['loss_first']:.3f} (first step) -> {done['loss_last']:.3f} (last).",
            "",
            "![training curves](training_curves.png)",
            "",
            "## Evaluation",
            "",
        ]
        for bench, m in sorted(metrics.items()):
            shown = ", ".join(f"{k} {v:.3f}" for k, v in m.items() if isinstance(v, float))
            lines.append(f"- **{bench}**: {shown} ([metrics](../{rel(run_dir)}/eval/{bench}/metrics.json))")
        lines.append("")
        for render in (table_5_3, table_5_4, table_5_5, table_vqa):
            try:
                lines += [render(runs), ""]
            except (KeyError, ValueError):  # a table needs a benchmark this profile did not run
                continue
        for bench, kind in (("coco", "captioning"), ("coco", "retrieval")):
            if bench in metrics:
                lines += [ablation_table(runs, bench, kind), ""]
        pages = sorted((run_dir / "eval").glob("*/*.html"))
        if pages:
            lines += ["Qualitative pages: " + ", ".join(f"[{p.parent.name}/{p.name}](../{rel(p)})" for p in pages), ""]
        lines += [
            "Numbers are fractions in the list above and x100 in the tables. METEOR `en` is `-l en -norm` "
            "(comparable with the thesis), `pt` is `-l pt -lower`. Each table names its tie rule (R@k: expected "
            "value under random tie-breaking, pessimistic value in parentheses) and VQA answer-matching mode.",
            "",
        ]
        write_text_atomic(self.output().path, "\n".join(lines))
        write_text_atomic(reports / "training_losses.json", json.dumps(series))
