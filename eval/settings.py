"""Settings of the evaluation stage (metric modes, generation, batching, prompts). Unknown keys are an error."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from eval.metrics.labels import IT2T_MEAN_LABEL, IT2T_SUM_LABEL, LENGTH_LABEL, NO_IMAGE_LABEL, TIE_RULE_LABEL
from eval.metrics.vqa import VQA_MODE_LABELS


class EvalSettings(BaseModel):
    """How `eval.runners` evaluates a model. Embeddable in the pipeline's TOML settings."""

    model_config = ConfigDict(extra="forbid")

    meteor_mode: Literal["en", "pt", "both", "none"] = Field(
        "both", description="METEOR mode(s): en (-l en -norm; the thesis' and papers' number), pt (-l pt -lower)")
    meteor_timeout_s: float = Field(
        300.0, gt=0, description="deadline of every METEOR read/write (the English jar needs ~10-60 s to start)")
    java: str = Field("java", description="Java 8+ runtime for PTBTokenizer and METEOR")
    caption_max_new_tokens: int = Field(30, ge=1, description="caption length cap (tokens)")
    caption_num_beams: int = Field(1, ge=1, description="1 = greedy (as FROMAGe evaluates)")
    image_batch_size: int = Field(64, ge=1, description="images per model call (embeddings, captions)")
    text_batch_size: int = Field(256, ge=1, description="texts per text_embeddings call")
    retrieval_chunk: int = Field(1024, ge=1, description="similarity rows computed at once")
    visdial_question_tag: str = Field("Q:", description="tag before each question in the dialogue prompt")
    visdial_answer_tag: str = Field("A:", description="tag before each answer in the dialogue prompt")
    visdial_no_image_baseline: bool = Field(
        True, description="also score every VisDial option with no image (the no-image baseline row): doubles "
        "the IT2T scoring time")
    vqa_mode: Literal["official", "pt"] = Field(
        "pt", description="VQA answer matching: official (vqaEval.py, 2021 revision: agreeing references compared "
        "verbatim) or pt (Portuguese mode: both sides normalised, PT articles, contractions, numbers, decimal comma)")
    vqa_prompt: str = Field("Q: {question} A:", description="VQA prompt after the image; must contain {question}")
    qualitative_examples: int = Field(24, ge=0, description="examples shown on each qualitative HTML page")

    def scoring_labels(self) -> dict[str, str]:
        """How answers and ties were scored, in words: stored beside the metrics and shown under every table."""
        return {"vqa_mode": self.vqa_mode, "vqa_rule": VQA_MODE_LABELS[self.vqa_mode], "tie_rule": TIE_RULE_LABEL}

    def visdial_labels(self) -> dict[str, str]:
        """Which ranking each VisDial IT2T key holds, and what each baseline record is (metrics.json `scoring`)."""
        labels = {"it2t_ranking": IT2T_SUM_LABEL, "it2t_meanloss_ranking": IT2T_MEAN_LABEL, "baseline_length": LENGTH_LABEL}
        if self.visdial_no_image_baseline:
            labels["baseline_no_image"] = NO_IMAGE_LABEL
        return labels

    @field_validator("vqa_prompt")
    @classmethod
    def _has_question(cls, v: str) -> str:
        if "{question}" not in v:
            raise ValueError("vqa_prompt must contain the placeholder {question}")
        return v
