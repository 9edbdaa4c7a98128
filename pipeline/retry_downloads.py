"""`ptvl download --retry-failed`: download again only the URLs that failed for a transient reason, split
by split, then rebuild the availability table."""
from __future__ import annotations

from collections.abc import Callable

from pipeline.availability import run_report
from pipeline.images.download import retry_failed
from pipeline.images.layout import manifest_path
from pipeline.io import write_text_atomic
from pipeline.settings import ConfigError, Settings


def retry_downloads(settings: Settings, datasets: list[str] | None, timeout: int | None,
                    say: Callable[[str], None]) -> str:
    """Retry every downloaded split of `datasets` (None: all); returns the new availability report."""
    layout = settings.layout
    splits = [(d, sp) for d, sp in settings.datasets.splits() if not datasets or d in datasets]
    for d, sp in splits:
        if not manifest_path(layout.images(d, sp)).exists():
            raise ConfigError(f"{d}/{sp} has not been downloaded yet; run `ptvl download` first")
    for d, sp in splits:
        s = settings.download.model_copy(update={"timeout": timeout}) if timeout else None
        m = retry_failed(layout.images(d, sp), s, progress=lambda msg, label=f"{d}/{sp}": say(f"{label}: {msg}"))
        say(f"{d}/{sp}: {m.available:,} of {m.urls:,} available after {len(m.attempts)} attempt(s)")
    done = [f"{d}/{sp}" for d, sp in settings.datasets.splits()
            if (layout.images(d, sp) / "availability.parquet").exists()]
    report = run_report(settings.root, done)
    write_text_atomic(layout.availability_report, report)
    return report
