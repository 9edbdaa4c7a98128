"""The shards contract: what BuildShards writes and the trainer and evaluators read.

Defined here (not in pipeline) because `training` and `eval` may not import `pipeline`; the
pipeline imports these schemas when it writes shards.

shards/<engine>/<dataset>/<split>/part-00000.parquet  (zstd)
"""
from __future__ import annotations

import pyarrow as pa

# Training shards: one row per (image, caption).
CAPTION_SHARD = pa.schema(
    [
        ("sample_id", pa.string()),  # the caption's segment_id
        ("image_id", pa.string()),
        ("image", pa.binary()),  # JPEG bytes as downloaded by img2dataset
        ("caption", pa.string()),  # PT-PT
        ("caption_en", pa.string()),
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("engine", pa.string()),
        ("flags", pa.list_(pa.string())),  # quality flags that hold for `caption` (kept by policy)
        # Human review (ptvl review; pipeline.human_review): "machine" or "human" (a person's correction,
        # which no machine flag drops).  The engine's own output and the flags raised on it stay beside it,
        # for provenance; `flags` leaves out the flags a person judged false alarms.
        ("text_source", pa.string()),
        ("caption_machine", pa.string()),
        ("flags_machine", pa.list_(pa.string())),
    ]
)

# Evaluation shards (COCO-style): one row per image with all its references.
EVAL_CAPTION_SHARD = pa.schema(
    [
        ("image_id", pa.string()),
        ("image", pa.binary()),
        ("captions", pa.list_(pa.string())),  # PT references (COCO: 5)
        ("captions_en", pa.list_(pa.string())),
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("engine", pa.string()),
    ]
)

# VisDial dialogs rebuilt in PT: one row per dialog.
VISDIAL_ROUND = pa.struct(
    [
        ("question", pa.string()),
        ("answer", pa.string()),
        ("answer_options", pa.list_(pa.string())),  # 100 options
        ("gt_index", pa.int32()),
    ]
)
VISDIAL_SHARD = pa.schema(
    [
        ("image_id", pa.string()),
        ("image", pa.binary()),
        ("caption", pa.string()),
        ("caption_en", pa.string()),
        ("rounds", pa.list_(VISDIAL_ROUND)),
        ("dense_round", pa.int32()),  # 1-based, null if none
        ("dense_relevance", pa.list_(pa.float32())),
        ("engine", pa.string()),
    ]
)

# VQAv2 evaluation shards: one row per question, answers in PT (translated once per distinct string).
VQA_SHARD = pa.schema(
    [
        ("question_id", pa.int64()),
        ("image_id", pa.string()),
        ("image", pa.binary()),
        ("question", pa.string()),  # PT-PT
        ("question_en", pa.string()),
        ("answers", pa.list_(pa.string())),  # the 10 human answers in PT-PT, same order as answers_en
        ("answers_en", pa.list_(pa.string())),
        ("answer_type", pa.string()),  # yes/no | number | other
        ("engine", pa.string()),
    ]
)
