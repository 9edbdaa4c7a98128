"""Train loop: exact resume, checkpoint contents, NaN stop, run.toml round trip, model card, data plan."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from training import checkpoint as ckpt
from training.config import ModelConfig, RunConfig, TrainConfig, read_run_toml, to_toml
from training.data import BatchPlan, concat_partners
from training.train import NonFiniteLoss, load_run, lr_lambda, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]


def cfgs(small_world, **train_kw) -> tuple[ModelConfig, TrainConfig]:
    mc = ModelConfig(llm=str(small_world.lm), clip=str(small_world.clip), clip_pretrained="", bridge="cls", k=2,
                     dtype="fp32", concat_prob=0.5, max_caption_tokens=16)
    tc = TrainConfig(**{"steps": 6, "batch_size": 8, "warmup_steps": 2, "lr": 1e-3, "ckpt_every": 3,
                        "log_every": 1, "schedule": "cosine", "seed": 3, **train_kw})
    return mc, tc


class Crash(Exception):
    pass


def test_resume_continues_the_exact_loss_curve(small_world, tmp_path):
    mc, tc = cfgs(small_world)
    straight = train(mc, tc, small_world.train_shards, tmp_path / "a", features_dir=small_world.features, progress=False)
    assert sorted(straight.losses) == [1, 2, 3, 4, 5, 6]

    def crash_at_3(model, step):  # a crash right after the step-3 checkpoint
        raise Crash(step)

    with pytest.raises(Crash):
        train(mc, tc.model_copy(update={"eval_every": 3}), small_world.train_shards, tmp_path / "b",
              features_dir=small_world.features, progress=False, eval_fn=crash_at_3)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "b")] == [3]
    resumed = train(mc, tc, small_world.train_shards, tmp_path / "b", features_dir=small_world.features, progress=False)
    assert sorted(resumed.losses) == [4, 5, 6]
    assert [resumed.losses[s] for s in (4, 5, 6)] == [straight.losses[s] for s in (4, 5, 6)]  # bit-exact
    a = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "a"))["trainable"]
    b = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "b"))["trainable"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_holds_only_trainable_weights_and_run_folder_is_complete(small_world, tmp_path):
    mc, tc = cfgs(small_world, steps=4, ckpt_every=2, keep_checkpoints=1)
    res = train(mc, tc, small_world.train_shards, tmp_path, features_dir=small_world.features, progress=False)
    files = ckpt.list_checkpoints(tmp_path)
    assert [s for s, _ in files] == [4]  # keep_checkpoints=1 pruned step 2
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
    state = ckpt.load_checkpoint(files[0][1])
    assert set(state) >= {"trainable", "optimizer", "scheduler", "rng", "step", "data_position", "config"}
    names = set(state["trainable"])
    assert {n.split(".")[0] for n in names} == {"bridge", "ret_in", "text_fc", "image_fc", "logit_scale"}
    assert sum(t.numel() for t in state["trainable"].values()) == res.trainable_params
    assert all(t.dtype == torch.float32 for t in state["trainable"].values())  # fp32 masters
    assert state["step"] == 4 and state["data_position"]["step"] == 4
    # run.toml reproduces the run; the model card names the parts; TensorBoard got events
    back = read_run_toml(tmp_path / "run.toml")
    # resolved as run on this CPU (compile and the fused pass off), inputs recorded with absolute paths
    assert back.model == mc.model_copy(update={"compile": False, "fused_pass": False})
    assert back.train == tc
    assert back.inputs.shards == [str(small_world.train_shards[0].resolve())]
    assert back.inputs.shard_bytes == [small_world.train_shards[0].stat().st_size]
    assert back.inputs.features == str(small_world.features.resolve()) and back.inputs.run_dir == str(tmp_path.resolve())
    card = (tmp_path / "README.md").read_text()
    assert str(small_world.lm) in card and "`cls`" in card and f"{res.trainable_params:,}" in card
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # the trained model reloads from the folder alone
    model = load_run(tmp_path, load_visual=True)
    assert all(torch.equal(p, state["trainable"][n]) for n, p in model.trainable_parameters())


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(small_world, tmp_path):
    from transformers import AutoTokenizer

    from training.data import CaptionData
    from training.features import FeatureStore

    mc, tc = cfgs(small_world, steps=6, ckpt_every=2)
    # Corrupt the cached features of the images that first appear in step 3 (a bad cache row).
    tok = AutoTokenizer.from_pretrained(small_world.lm)
    data = CaptionData(small_world.train_shards, lambda t: tok(t, add_special_tokens=False)["input_ids"])
    plan = BatchPlan(data.lengths, tc.batch_size, tc.seed, tc.bucket_by_length, tc.bucket_pool)
    seen = {data.image_ids[i] for s in (0, 1) for i in plan.batch(s)}
    bad = sorted({data.image_ids[i] for i in plan.batch(2)} - seen)
    assert bad
    feats = tmp_path / "features"
    shutil.copytree(small_world.features, feats)
    cls = np.load(feats / "cls.npy")
    cls[FeatureStore(small_world.features).rows(bad)] = np.nan
    np.save(feats / "cls.npy", cls)
    with pytest.raises(NonFiniteLoss, match="step 3"):
        train(mc, tc, small_world.train_shards, tmp_path / "run", features_dir=feats, progress=False)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run")] == [2]
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "run"))
    assert all(torch.isfinite(t).all() for t in state["trainable"].values())


def test_resume_refuses_a_different_model(small_world, tmp_path):
    mc, tc = cfgs(small_world, steps=2, ckpt_every=1)
    train(mc, tc, small_world.train_shards, tmp_path, features_dir=small_world.features, progress=False)
    with pytest.raises(ValueError, match="different model config"):
        train(mc.model_copy(update={"k": 3}), tc.model_copy(update={"steps": 3}), small_world.train_shards, tmp_path,
              features_dir=small_world.features, progress=False)


def test_online_encoder_equals_cached_features(small_world, tmp_path):
    """Preprocessing has no augmentation, so running CLIP every step gives the cached run's curve."""
    mc, tc = cfgs(small_world, steps=2)
    cached = train(mc, tc, small_world.train_shards, tmp_path / "c", features_dir=small_world.features, progress=False)
    online = train(mc, tc.model_copy(update={"use_cached_features": False}), small_world.train_shards, tmp_path / "o",
                   features_dir=None, progress=False)
    # the cache is fp16, so equal up to fp16 rounding of the features
    for s in (1, 2):
        assert online.losses[s] == pytest.approx(cached.losses[s], rel=2e-3)


def test_batch_plan_is_a_function_of_seed_and_step_and_buckets_reduce_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 40, size=1000)
    plan = BatchPlan(lengths, 50, seed=1, bucket_by_length=True, pool=10)
    again = BatchPlan(lengths, 50, seed=1, bucket_by_length=True, pool=10)
    assert all(np.array_equal(plan.batch(s), again.batch(s)) for s in (0, 7, 19, 20, 45))
    epoch = np.concatenate([plan.batch(s) for s in range(plan.per_epoch)])
    assert sorted(epoch) == list(range(1000))  # every sample once per epoch
    assert not np.array_equal(plan.batch(0), plan.batch(plan.per_epoch))  # epochs differ

    def padding(p: BatchPlan) -> int:
        return sum(int(lengths[p.batch(s)].max() * 50 - lengths[p.batch(s)].sum()) for s in range(p.per_epoch))

    plain = BatchPlan(lengths, 50, seed=1, bucket_by_length=False)
    assert padding(plan) < 0.2 * padding(plain)
    assert concat_partners(6, 0.5, 1, 2, 0, 0) == concat_partners(6, 0.5, 1, 2, 0, 0)
    assert concat_partners(4, 1.0, 1, 2, 0, 0) == [1, 2, 3, 0]


def test_lr_schedule_and_settings():
    f = lr_lambda(TrainConfig(warmup_steps=10, steps=110, schedule="cosine"))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0, abs=1e-9)
    assert lr_lambda(TrainConfig(warmup_steps=10, schedule="constant"))(5000) == 1.0
    with pytest.raises(ValueError):
        TrainConfig(batch_size=8, micro_batch_size=16)
    with pytest.raises(ValueError):
        TrainConfig(lr_max=1.0)
    text = to_toml(RunConfig().model_dump(mode="json"))
    assert "[model]" in text and "[train]" in text and "compile" not in text  # None is left out


def test_feature_standardisation_statistics_are_fixed_and_saved(small_world, tmp_path):
    from training.features import FeatureStore

    mc, tc = cfgs(small_world, steps=2)
    mc = mc.model_copy(update={"feature_norm": "standardize"})
    res = train(mc, tc, small_world.train_shards, tmp_path, features_dir=small_world.features, progress=False)
    store = FeatureStore(small_world.features)
    train_ids = [i for i in store.ids if i.startswith("train/")]
    cls = store.features(train_ids, {"cls": [-1]})["cls"][-1]
    mean, std = res.model.feature_stats["cls"][-1]
    torch.testing.assert_close(mean, cls.mean(0))  # all 40 training images (fewer than the 4,096 sampled)
    normed = res.model.norm_feats({"cls": {-1: cls}})["cls"][-1]
    torch.testing.assert_close(normed.std(0), torch.ones(cls.shape[1]), rtol=1e-4, atol=1e-4)
    reloaded = load_run(tmp_path, load_visual=False, vis_dim=store.width, n_tokens=store.n_tokens)
    torch.testing.assert_close(reloaded.feature_stats["cls"][-1][1], std)


def test_run_toml_alone_reruns_the_run_with_the_same_losses(small_world, tmp_path):
    """`ptvl train --config <run>/run.toml` needs no profile: shards, features, seed and resolved settings are in
    the file. The rerun (into a sibling folder) gives the same losses and bit-identical weights."""
    import json

    from typer.testing import CliRunner

    from pipeline.cli import app

    shards = tmp_path / "shards"
    shutil.copytree(small_world.train_shards[0].parent, shards)
    mc, tc = cfgs(small_world, steps=3, ckpt_every=10)
    first = train(mc, tc, sorted(shards.glob("*.parquet")), tmp_path / "root" / "train" / "a",
                  features_dir=small_world.features, progress=False, root=tmp_path / "root")
    run_toml = tmp_path / "root" / "train" / "a" / "run.toml"
    assert read_run_toml(run_toml).inputs.root == str((tmp_path / "root").resolve())
    out = CliRunner().invoke(app, ["train", "--config", str(run_toml), "--run-name", "b"])
    assert out.exit_code == 0, out.output
    done = json.loads((tmp_path / "root" / "train" / "b" / "_DONE.json").read_text())
    assert done["steps"] == 3 and done["loss_first"] == first.losses[1] and done["loss_last"] == first.losses[3]
    a = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "root" / "train" / "a"))["trainable"]
    b = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "root" / "train" / "b"))["trainable"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_run_toml(tmp_path / "root" / "train" / "b" / "run.toml").inputs.run_dir == str(
        (tmp_path / "root" / "train" / "b").resolve())
    # a shard that changed since the run cannot reproduce it: a one-line refusal before any training
    with open(sorted(shards.glob("*.parquet"))[0], "ab") as f:
        f.write(b"x")
    out = CliRunner().invoke(app, ["train", "--config", str(run_toml), "--run-name", "c"])
    assert out.exit_code == 2 and "has changed since the run" in out.output
    assert not (tmp_path / "root" / "train" / "c").exists()


def test_train_overrides_go_to_the_run_folder_not_beside_the_profile(tmp_path):
    """Two `ptvl train` runs from one profile with different overrides must not overwrite each other's resolved
    profile, and a read-only config folder must work: the profile goes to train/<run>/profile.toml."""
    import os
    import stat

    from pipeline.settings import load_settings
    from pipeline.train_runs import train_profile

    conf = tmp_path / "conf"
    conf.mkdir()
    text = (REPO / "configs" / "sample.toml").read_text()
    text = text.replace('root = "runs/sample"', f'root = "{tmp_path / "root"}"')
    (conf / "sample.toml").write_text(text)
    os.chmod(conf, stat.S_IRUSR | stat.S_IXUSR)
    try:
        a = train_profile(conf / "sample.toml", {"k": 4, "recipe": "fromage"}, 7, "a")
        b = train_profile(conf / "sample.toml", {"k": 2}, None, "b")
        assert sorted(p.name for p in conf.iterdir()) == ["sample.toml"]  # nothing written beside it
    finally:
        os.chmod(conf, stat.S_IRWXU)
    assert a == tmp_path / "root" / "train" / "a" / "profile.toml"
    assert b == tmp_path / "root" / "train" / "b" / "profile.toml"
    sa, sb = load_settings(a), load_settings(b)
    assert (sa.model.k, sa.model.recipe, sa.model.max_caption_tokens, sa.train.steps) == (4, "fromage", 24, 7)
    assert (sb.model.k, sb.model.recipe, sb.train.steps, sb.training.run_name) == (2, "thesis-eq", 500, "b")
    # no override at all: the user's profile itself, nothing written
    assert train_profile(conf / "sample.toml", {}, None, None) == (conf / "sample.toml").resolve()


def test_checkpoint_rename_is_followed_by_a_folder_fsync(tmp_path, monkeypatch):
    """The new checkpoint's directory entry is flushed before older checkpoints are pruned."""
    import os

    events: list[tuple[str, str]] = []
    real_fsync, real_replace, real_unlink = os.fsync, os.replace, type(tmp_path).unlink

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync-dir" if stat_isdir(st.st_mode) else "fsync-file", str(st.st_ino)))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        return real_replace(src, dst)

    def unlink(self, missing_ok=False):
        events.append(("unlink", str(self)))
        return real_unlink(self, missing_ok=missing_ok)

    from stat import S_ISDIR as stat_isdir

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(type(tmp_path), "unlink", unlink)
    ckpt.save_checkpoint(tmp_path, 1, {"x": torch.zeros(2)}, keep=1)
    events.clear()
    path = ckpt.save_checkpoint(tmp_path, 2, {"x": torch.ones(2)}, keep=1)
    folder_ino = str(os.stat(path.parent).st_ino)
    kinds = [e[0] for e in events]
    assert kinds == ["fsync-file", "replace", "fsync-dir", "unlink"], events
    assert events[2][1] == folder_ino and events[3][1].endswith("step-00000001.pt")
    assert torch.equal(ckpt.load_checkpoint(path)["x"], torch.ones(2))
