"""`ptvl translate` (without --dry-run): the pre-flight, the parts and joins of one engine, and what they
billed, with the command's exit code.

Exit codes (README, "Pay once"): 0 done and the billing reconciles; 2 the run did not finish (a quota stop,
429s past the back-off, an error; finished work is kept) or a command error; `EXIT_BILLING_DIFFERENCE` (3)
done, but DeepL's counter differs from what the memory explains and nobody acknowledged it
(`--accept-billing-difference` records the acknowledgement in the ledger; later runs stop warning for it).
The billing lines are printed whatever happened: a failed run says what it billed too.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline import preflight
from pipeline.billing import EXIT_BILLING_DIFFERENCE, Billing, accept_billing, engine_ids, report_billing
from pipeline.checks import check_engines
from pipeline.settings import ConfigError, Settings
from pipeline.tasks.scheduling import LocalBuild, build_local
from pipeline.tasks.translate import Translate


@dataclass
class TranslateOutcome:
    build: LocalBuild
    billing: dict[str, Billing]
    accepted: int  # characters acknowledged by --accept-billing-difference in this run

    @property
    def exit_code(self) -> int:
        """2 when the run did not finish, else 3 while a billing difference is unacknowledged, else 0."""
        if not self.build.ok:
            return 2
        return EXIT_BILLING_DIFFERENCE if any(b.open_difference for b in self.billing.values()) else 0


def translate_targets(settings: Settings, engine: str, config: Path, datasets: list[str] | None,
                      splits: list[str] | None = None) -> list[tuple[str, str]]:
    """The enabled (dataset, split) pairs `--dataset` / `--split` keep (none given: all); ConfigError for an
    engine the profile does not configure, or filters that keep nothing."""
    if engine not in settings.engines:
        raise ConfigError(f"no [engines.{engine}] table in {config}; configured: {', '.join(settings.engines)}")
    targets = [(d, sp) for d, sp in settings.datasets.splits()
               if (not datasets or d in datasets) and (not splits or sp in splits)]
    if not targets:
        raise ConfigError("no dataset/split matches the filters")
    return targets


def translate_engine(settings: Settings, config: str, engine: str, targets: list[tuple[str, str]], *,
                     workers: int, allow_partial: bool, accept_difference: bool,
                     say: Callable[[str], None]) -> TranslateOutcome:
    """Pre-flight `engine` (PreflightError before anything is sent), build its joins for `targets` (the parts
    translate every string of the run: one payment per string), then `say` Luigi's summary and the billing."""
    check_engines(settings, [engine])
    for line in preflight.preflight_paid_engines(settings, config, [engine], allow_partial=allow_partial,
                                                 build_kwargs={"workers": workers, "local_scheduler": True}):
        say(line)
    build = build_local([Translate(config=config, dataset=d, split=sp, engine=engine) for d, sp in targets], workers)
    say(build.summary_text)
    ids = engine_ids(settings, [engine])
    accepted = 0
    if accept_difference:
        accepted = accept_billing(settings.root, engine, ids[engine])
        if accepted:
            say(f"{engine}: {accepted:+,} unexplained characters acknowledged in the billing ledger "
                f"({settings.layout.ledger_dir(ids[engine])}); later runs stop warning for them")
    return TranslateOutcome(build, report_billing(settings.root, ids, say), accepted)
