"""The pipeline's data contracts, defined once as pyarrow schemas (tests check every writer against them).

The shard schemas (what BuildShards writes, the trainer and evaluators read) live in
training/shards.py, since `training` and `eval` do not import `pipeline`; each dataset card lists
its folder's columns and types from them.

Stable ids, the keys every stage joins on (defined here, nowhere else):
- CC3M: item/image id ``cc3m/<split>/<row>`` (row = 0-based line number in the TSV); its caption
  segment id is ``cc3m/<split>/<row>``, field ``caption``.
- COCO: image id ``coco/<cocoid>``; caption segment id ``coco/<cocoid>/<n>`` (n = position in the
  image's sentence list), field ``caption``.
- VisDial: image id ``visdial/<image_id>``; caption segment ``visdial/<split>/caption/<image_id>``,
  field ``caption``; the global lists are segments ``visdial/<split>/question/<i>`` and
  ``visdial/<split>/answer/<i>`` (i = index in ``data.questions`` / ``data.answers``), item id
  ``visdial/<split>/questions`` or ``visdial/<split>/answers``, field ``question`` / ``answer``.
  Dialogs are rebuilt from those indices.  With ``translate.visdial_context`` on, each dialog's
  history text is also translated with the dialog's caption as context: rows keyed by
  (image id, 1-based round, field) in VISDIAL_CONTEXT_TRANSLATED.
"""
from __future__ import annotations

import pyarrow as pa

# One row per translatable string.  segments/<dataset>/<split>.parquet
SEGMENTS = pa.schema(
    [
        ("segment_id", pa.string()),
        ("dataset", pa.string()),  # cc3m | coco | visdial
        ("split", pa.string()),
        ("item_id", pa.string()),  # the image (or global list) the string belongs to
        ("field", pa.string()),  # caption | question | answer
        ("text_en", pa.string()),
        ("text_hash", pa.string()),  # translation.textkey.text_hash(text_en)
    ]
)

# One row per image to fetch.  sources/<dataset>/<split>/items.parquet
ITEMS = pa.schema(
    [
        ("image_id", pa.string()),
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("url", pa.string()),  # http(s):// or file:// ; img2dataset input
        ("source_path", pa.string()),  # path inside an official image zip/folder when known, else null
    ]
)

# A row a reader could not use, with why.  sources/<dataset>/<split>/quarantine.parquet
QUARANTINE = pa.schema(
    [
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("source_file", pa.string()),
        ("line", pa.int64()),  # 1-based line (TSV) or record index (JSON); -1 when not applicable
        ("reason", pa.string()),  # short class: missing_field, empty_caption, bad_utf8, bad_url, ...
        ("detail", pa.string()),
        ("raw", pa.string()),  # the offending text, decoded with errors="replace", capped at 2 KiB
    ]
)

# One row per URL after download.  images/<dataset>/<split>/availability.parquet
AVAILABILITY = pa.schema(
    [
        ("image_id", pa.string()),
        ("url", pa.string()),
        ("status", pa.string()),  # success | failed
        ("reason", pa.string()),  # ok | http_404 | http_5xx ... | timeout | dns | connection_refused | not_an_image | decode_error | too_small | other
        ("error_message", pa.string()),  # img2dataset's raw message, null on success
        ("key", pa.string()),  # img2dataset key (locates the image in the output shards), null if failed
        # img2dataset output folder of the successful attempt, relative to the split's images folder
        # (retry rounds number their keys from 0 again, so (shards_dir, key) is the image's address).
        ("shards_dir", pa.string()),
    ]
)

# VisDial dialogs rebuilt from indices.  sources/visdial/<split>/dialogs.parquet
DIALOG_ROUND = pa.struct(
    [
        ("question", pa.int32()),  # index into data.questions
        ("answer", pa.int32()),  # index into data.answers (null in test split)
        ("answer_options", pa.list_(pa.int32())),  # 100 indices into data.answers
        ("gt_index", pa.int32()),  # position of the answer in answer_options (null in test split)
    ]
)
DIALOGS = pa.schema(
    [
        ("image_id", pa.string()),  # visdial/<image_id>
        ("visdial_image_id", pa.int64()),
        ("caption_segment_id", pa.string()),
        ("rounds", pa.list_(DIALOG_ROUND)),
        ("dense_round", pa.int32()),  # 1-based round_id with dense annotations, null if none
        ("dense_relevance", pa.list_(pa.float32())),  # 100 relevance scores, null if none
    ]
)

# Segments joined with their translation and quality flags.  translated/<engine>/<dataset>/<split>.parquet
TRANSLATED = pa.schema(
    list(SEGMENTS)
    + [
        ("engine", pa.string()),  # short engine name from the config (reference, deepl, madlad, ...)
        ("engine_id", pa.string()),  # the full stable id that keys the memory
        ("text_pt", pa.string()),
        ("score", pa.float32()),  # mean token log-prob where the engine gives one
        ("flags", pa.list_(pa.string())),  # translation.quality flag names raised on this row
        ("flag_reasons", pa.list_(pa.string())),  # the evidence for each flag, same order
    ]
)

# Segments never sent to the engine (translation.runner.set_aside_reason: lone_surrogate,
# control_chars, over_max_chars, too_long_for_request, rejected_by_engine); left out of TRANSLATED, and
# counted by reason in the dataset cards.  translated/<engine>/<dataset>/<split>.set_aside.parquet
SET_ASIDE = pa.schema(
    list(SEGMENTS)
    + [
        ("chars", pa.int64()),  # characters of text_en
        ("reason", pa.string()),
    ]
)

# VisDial dialog text translated with the dialog's EN caption as DeepL context (only when
# translate.visdial_context is on): each round's question and ground-truth answer as they appear in
# that dialog's history.  The 100 answer options stay context-free (the TRANSLATED rows of the global
# answer list).  translated/<engine>/visdial/<split>.context.parquet
VISDIAL_CONTEXT_TRANSLATED = pa.schema(
    [
        ("image_id", pa.string()),  # visdial/<image_id>, as in DIALOGS
        ("round", pa.int32()),  # 1-based, as VisDial's round_id
        ("field", pa.string()),  # question | answer
        ("segment_id", pa.string()),  # the global-list segment the EN text comes from
        ("text_en", pa.string()),  # "" for a global string that was empty (no segment; costs nothing)
        ("context", pa.string()),  # the dialog's EN caption, as sent to the engine
        ("text_hash", pa.string()),  # translation.memory.memory_key(text_en, context), NOT text_hash(text_en)
        ("engine", pa.string()),
        ("engine_id", pa.string()),  # the context engine's id (DeepL ...:context=on)
        ("text_pt", pa.string()),
        ("score", pa.float32()),
        ("flags", pa.list_(pa.string())),
        ("flag_reasons", pa.list_(pa.string())),
    ]
)

# VQAv2 questions with their 10 human answers (EN; the answers' PT side is found through the answer
# segments' text_hash).  sources/vqav2/<split>/questions.parquet
# Ids: image ``vqav2/<image_id>``; question segment ``vqav2/<split>/question/<question_id>``, field
# ``question``, item id the image; every DISTINCT answer string is one segment
# ``vqav2/<split>/answer/<text_hash>``, field ``answer``, item id ``vqav2/<split>/answers`` (so "yes"
# and "no" are translated once, not 80,000 times each).
VQA_QUESTIONS = pa.schema(
    [
        ("question_id", pa.int64()),
        ("image_id", pa.string()),  # vqav2/<image_id>
        ("question_segment_id", pa.string()),
        ("answer_type", pa.string()),  # yes/no | number | other
        ("answers", pa.list_(pa.string())),  # the 10 raw human answers, in file order
        ("multiple_choice_answer", pa.string()),  # the most frequent answer, as the file gives it
    ]
)
