"""The per-row path: every registered flag's detector on one row, in registry order."""
from __future__ import annotations

from collections.abc import Collection

from translation.quality.base import Row
from translation.quality.registry import FLAGS, SUPPRESSED_BY
from translation.quality.thresholds import DEFAULT_THRESHOLDS, QualityThresholds


def flag_details(text_en: str, text_pt: str | None, score: float | None = None,
                 thresholds: QualityThresholds | None = None, *,
                 only: Collection[str] | None = None) -> dict[str, str]:
    """Every flag raised for one row, mapped to its reason (insertion order = FLAG_NAMES order).

    An exclusive flag (`empty`) that fires is the only one reported; a flag another fired flag suppresses
    (`untranslated` suppresses `brazilian` and `truncated`) is not reported.  `only` (optional) skips the
    detectors not named in it, as if they had found nothing (exclusive flags always run); `flag_table`
    passes the detectors its pre-filter could not rule out.
    """
    th = thresholds or DEFAULT_THRESHOLDS
    row = Row(text_en, text_pt, score)
    found: dict[str, str] = {}
    for f in FLAGS:
        if f.exclusive:  # nothing else is meaningful when it fires
            reason = f.detect(row, th)
            if reason:
                return {f.name: reason}
            continue
        if (only is not None and f.name not in only) or not SUPPRESSED_BY[f.name].isdisjoint(found):
            continue
        reason = f.detect(row, th)
        if reason:
            found[f.name] = reason
    return found


def flag_row(text_en: str, text_pt: str | None, score: float | None = None,
             thresholds: QualityThresholds | None = None) -> list[str]:
    """The names of the flags raised for one row."""
    return list(flag_details(text_en, text_pt, score, thresholds))
