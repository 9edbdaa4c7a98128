"""BuildShards: join translations, quality flags and downloaded images into the trainer's Parquet shards.

Contracts are training/shards.py (CAPTION_SHARD, EVAL_CAPTION_SHARD, VISDIAL_SHARD, VQA_SHARD).
Rows leave the training set for a recorded reason only (datatrove style: `total`, `kept`,
`dropped_<reason>`), and those counts go into the dataset card beside the shards.

Human review: the builders take the translated table with the review applied
(`pipeline.human_review.apply_review`: ``text_source``, ``text_pt_machine``, ``flags_machine`` columns)
and count the kept rows that carry a person's text (`human_corrected`) and the rows the filter policy
would have dropped but the review kept (`kept_by_human_text`, `kept_by_false_alarm`).  Without those
columns every text is the machine's.

One style for the three builders (captions.py, visdial.py, vqa.py): decide every row with polars/numpy
up front, drop rows for a counted reason (`common.keep_rows`), then gather the kept rows with their
images one img2dataset batch at a time and cut the part files (`common.write_parts`).
"""
from pipeline.shards.captions import build_caption_shards
from pipeline.shards.common import FilterPolicy, ShardSettings, ShardStats
from pipeline.shards.visdial import build_visdial_shards
from pipeline.shards.vqa import build_vqa_shards

__all__ = ["FilterPolicy", "ShardSettings", "ShardStats", "build_caption_shards", "build_visdial_shards",
           "build_vqa_shards"]
