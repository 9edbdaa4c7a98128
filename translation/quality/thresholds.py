"""The thresholds of the quality detectors: the `[quality]` table of a run profile."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class QualityThresholds(BaseModel):
    """Thresholds of the quality detectors (the `[quality]` table of a run profile)."""

    model_config = ConfigDict(extra="forbid")

    english_prob: float = Field(
        0.9, ge=0.5, le=1.0,
        description="untranslated: py3langid probability of 'en' (among `langid_languages`) at or above "
        "which an output is 'mostly English'.",
    )
    langid_min_words: int = Field(
        3, ge=1, description="untranslated: language ID runs only on outputs with at least this many words "
        "(it is unreliable on one or two words; identity with the source still catches those).",
    )
    langid_languages: tuple[str, ...] = Field(
        ("en", "pt", "es", "gl", "fr", "it"),
        description="untranslated: languages py3langid chooses among (restricting the set sharpens it).",
    )
    min_length_ratio: float = Field(
        0.55, gt=0.0,
        description="truncated: chars(output)/chars(source) below this flags. Calibrated on the gold set: "
        "for sources >= 40 chars the PT-PT ratio has min 0.595, 1st percentile 0.70, median 1.08, so no gold "
        "row trips it. Concise PT-PT reaches 0.6, so a cut that keeps more than 55% of the length is left "
        "to the number and dangling-word checks.",
    )
    min_source_chars: int = Field(
        40, ge=1, description="truncated: the length-ratio check applies only to sources at least this long "
        "(short strings such as 'is there any juice?' -> 'há sumo?' have erratic ratios). repetitive: shorter "
        "sources count as this long, so a runaway output of a short source ('yes' -> 100+ chars) still flags.",
    )
    max_length_ratio: float = Field(
        2.5, gt=1.0, description="repetitive: chars(output)/max(chars(source), min_source_chars) above this "
        "flags (gold PT-PT max 1.35 so measured; its longest output for a short source is 54 chars).",
    )
    short_source_chars: int = Field(
        20, ge=1, description="repetitive: a source shorter than `min_source_chars` counts as this many chars "
        "for the length check, so an output over max_length_ratio x this ('yes' -> 87 chars, a hallucinated "
        "reply) flags. Gold PT-PT peaks at 1.5 x max(source, 20) chars ('is the bus moving?').",
    )
    portuguese_zipf: float = Field(
        2.0, ge=0.0, description="untranslated: a word is Portuguese when its wordfreq Zipf frequency in "
        "Portuguese is at least this ...",
    )
    portuguese_zipf_margin: float = Field(
        0.75, ge=0.0, description="... and at least its English Zipf frequency minus this margin ('animal' "
        "4.75 pt / 4.81 en is Portuguese; 'green' 4.28 / 5.13 and 'dog' 3.93 / 5.10 are not). An output "
        "made only of Portuguese words is never 'untranslated'.",
    )
    ngram_max_repeats: int = Field(
        3, ge=2, description="repetitive: a word 2- or 3-gram occurring this many times anywhere flags.",
    )
    tandem_copies: int = Field(
        3, ge=2, description="repetitive: an n-gram (n <= 4) repeated this many times back to back flags "
        "('muito muito muito'), as does a piece of 2-10 characters (with a letter) repeated so inside one "
        "word ('qjqjqj', 'zzzzzz').",
    )
    min_score: float | None = Field(
        -1.5, description="low_score: mean token log-probability (nats) below this flags; None disables.",
    )


DEFAULT_THRESHOLDS = QualityThresholds()
