"""The benchmark driver and runners on a real (tiny) V-Glória run: a trained checkpoint is reloaded with
load_run and evaluated from shards through eval.benchmarks.evaluate, CLIP running online on the JPEGs."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from eval.benchmarks import collect_runs, evaluate
from eval.settings import EvalSettings
from eval.tables import table_5_3, table_5_5
from pipeline.sample.scenes import captions
from tests.trainfixtures import build_world, jpeg
from training.config import ModelConfig, TrainConfig
from training.shards import EVAL_CAPTION_SHARD, VISDIAL_SHARD
from training.train import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(request, tmp_path_factory):
    world = build_world(request.config.cache.mkdir("ptvl-train-sample"))
    torch.set_num_threads(1)
    mc = ModelConfig(llm=str(world.lm), clip=str(world.clip), clip_pretrained="", bridge="cls", k=4,
                     dtype="fp32", compile=False, max_caption_tokens=24)
    tc = TrainConfig(steps=20, batch_size=32, lr=3e-3, warmup_steps=2, log_every=5, ckpt_every=10**6)
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    train(mc, tc, world.train_shards, run_dir, features_dir=world.features, progress=False)
    return world, run_dir


def _eval_shard(world, folder):
    scenes = world.heldout[:12]
    rows = {
        "image_id": world.heldout_ids[:12],
        "image": [jpeg(sc) for sc in scenes],
        "captions": [[pt for _, pt in captions(sc)] for sc in scenes],
        "captions_en": [[en for en, _ in captions(sc)] for sc in scenes],
        "dataset": ["coco"] * 12, "split": ["test"] * 12, "engine": ["reference"] * 12,
    }
    folder.mkdir(parents=True)
    pq.write_table(pa.table(rows, schema=EVAL_CAPTION_SHARD), folder / "part-00000.parquet")
    return folder


def _visdial_shard(world, folder):
    options = [f"xyzzy {i} qwerty plugh kkk {i * 7} zzz" for i in range(99)]
    rows = []
    for i, sc in enumerate(world.heldout[:3]):
        first = captions(sc)[1][1]
        rounds = [{"question": "o que se vê?", "answer": first, "answer_options": [first, *options],
                   "gt_index": 0} for _ in range(2)]
        rows.append({"image_id": world.heldout_ids[i], "image": jpeg(sc), "caption": captions(sc)[0][1],
                     "caption_en": captions(sc)[0][0], "rounds": rounds, "dense_round": 1,
                     "dense_relevance": [1.0] + [0.0] * 99, "engine": "reference"})
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=VISDIAL_SHARD), folder / "part-00000.parquet")
    return folder


def test_coco_benchmark_from_shards(run, tmp_path):
    world, run_dir = run
    shards = _eval_shard(world, tmp_path / "shards")
    settings = EvalSettings(meteor_mode="pt", caption_max_new_tokens=12)
    out = run_dir / "eval" / "coco"
    res = evaluate(run_dir, "coco", shards, out, engine="reference", settings=settings)
    m = res["metrics"]
    assert m["t2i_n"] == 60 and m["i2t_n"] == 12
    for key in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "bleu4", "meteor_pt", "cider_d"):
        assert 0.0 <= m[key] <= (10.0 if key == "cider_d" else 1.0), (key, m[key])
    assert m["i2t_r1"] <= m["i2t_r5"] <= m["i2t_r10"] and m["t2i_r1"] <= m["t2i_r5"] <= m["t2i_r10"]
    written = json.loads((out / "metrics.json").read_text())
    assert written["bridge"] == "cls" and "expected value" in written["scoring"]["tie_rule"]
    assert m["i2t_r1_pess"] <= m["i2t_r1"] and m["t2i_medr"] >= 1.0
    items = json.loads((out / "items.json").read_text())
    assert len(items["text_keys"]) == 60 and items["text_keys"][0].startswith(world.heldout_ids[0] + "\t")
    generated = json.loads((out / "captions.json").read_text())
    assert set(generated) == set(world.heldout_ids[:12]) and all(isinstance(c, str) for c in generated.values())
    assert (out / "retrieval.html").exists() and (out / "captions.html").exists()


def test_visdial_benchmark_ranks_the_right_option_first(run, tmp_path):
    """The right answer is the scene's own caption, the 99 others are gibberish the LM never saw: even a
    barely trained model must give it the lowest loss (IT2T R@1 = 1)."""
    world, run_dir = run
    shards = _visdial_shard(world, tmp_path / "vd")
    res = evaluate(run_dir, "visdial", shards, run_dir / "eval" / "visdial", engine="reference",
                   settings=EvalSettings(meteor_mode="none"))
    m = res["metrics"]
    assert m["it2t_r1"] == 1.0 and m["it2t_mrr"] == 1.0 and m["it2t_n_rounds"] == 6
    assert m["it2t_ndcg"] == pytest.approx(1.0) and m["it2t_meanloss_r1"] == 1.0
    # ... and so does the same LLM with no image: this benchmark is solved by the text alone, which is what
    # the no-image baseline row is there to show. Length alone wins where the caption is the shortest option
    # (the shortest gibberish has 30 characters; a tie with it counts one half).
    assert res["baselines"]["no_image"]["it2t_r1"] == 1.0 and "t2i_r1" not in res["baselines"]["no_image"]
    lengths = [len(captions(sc)[1][1]) for sc in world.heldout[:3]]
    assert res["baselines"]["length"]["it2t_r1"] == pytest.approx(
        sum(1.0 if n < 30 else 0.5 if n == 30 else 0.0 for n in lengths) / 3)
    assert res["llm_facts"]["model_type"] == "gpt_neo" and res["llm_facts"]["params"] > 0
    assert res["checkpoint_step"] == 20 and "summed answer-token loss" in res["scoring"]["it2t_ranking"]
    assert 0.0 <= m["t2i_r1"] <= 1.0
    runs = collect_runs([run_dir])
    assert set(runs[0]["metrics"]) >= {"visdial"}
    assert "VisDial" in table_5_5(runs) and "Ties: R@k = expected value" in table_5_5(runs)
    assert m["it2t_translation_collisions"] == 0 and runs[0]["scoring"]["visdial"]["tie_rule"]


def test_tables_from_several_runs(run, tmp_path):
    world, run_dir = run
    shards = _eval_shard(world, tmp_path / "s2")
    evaluate(run_dir, "coco", shards, run_dir / "eval" / "coco", engine="reference",
             settings=EvalSettings(meteor_mode="none", caption_max_new_tokens=8))
    md = table_5_3(collect_runs([run_dir, run_dir]))
    assert md.count("MSCOCO") >= 1 and "IT2T R@5" in md
