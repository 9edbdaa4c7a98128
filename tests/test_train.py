"""Train loop: exact resume, checkpoint contents, NaN stop, run.toml round trip, model card, data plan."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tests.trainfixtures import build_world
from training import checkpoint as ckpt
from training.config import ModelConfig, RunConfig, TrainConfig, read_run_toml, to_toml
from training.data import BatchPlan, concat_partners
from training.train import NonFiniteLoss, load_run, lr_lambda, train


@pytest.fixture(scope="module")
def world(request):
    root = request.config.cache.mkdir("ptvl-train-small")
    return build_world(root, n_train=40, n_heldout=8,
                       lm_args=dict(hidden=32, layers=2, heads=4, vocab_size=300, seq_len=48, batch=8, steps=20))


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny matmuls: threads only spin against each other on a shared 2-core box.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cfgs(world, **train_kw) -> tuple[ModelConfig, TrainConfig]:
    mc = ModelConfig(llm=str(world.lm), clip=str(world.clip), clip_pretrained="", bridge="cls", k=2,
                     dtype="fp32", concat_prob=0.5, max_caption_tokens=16)
    tc = TrainConfig(**{"steps": 6, "batch_size": 8, "warmup_steps": 2, "lr": 1e-3, "ckpt_every": 3,
                        "log_every": 1, "schedule": "cosine", "seed": 3, **train_kw})
    return mc, tc


class Crash(Exception):
    pass


def test_resume_continues_the_exact_loss_curve(world, tmp_path):
    mc, tc = cfgs(world)
    straight = train(mc, tc, world.train_shards, tmp_path / "a", features_dir=world.features, progress=False)
    assert sorted(straight.losses) == [1, 2, 3, 4, 5, 6]

    def crash_at_3(model, step):  # a crash right after the step-3 checkpoint
        raise Crash(step)

    with pytest.raises(Crash):
        train(mc, tc.model_copy(update={"eval_every": 3}), world.train_shards, tmp_path / "b",
              features_dir=world.features, progress=False, eval_fn=crash_at_3)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "b")] == [3]
    resumed = train(mc, tc, world.train_shards, tmp_path / "b", features_dir=world.features, progress=False)
    assert sorted(resumed.losses) == [4, 5, 6]
    assert [resumed.losses[s] for s in (4, 5, 6)] == [straight.losses[s] for s in (4, 5, 6)]  # bit-exact
    a = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "a"))["trainable"]
    b = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "b"))["trainable"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_holds_only_trainable_weights_and_run_folder_is_complete(world, tmp_path):
    mc, tc = cfgs(world, steps=4, ckpt_every=2, keep_checkpoints=1)
    res = train(mc, tc, world.train_shards, tmp_path, features_dir=world.features, progress=False)
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
    assert read_run_toml(tmp_path / "run.toml") == RunConfig(model=mc, train=tc)
    card = (tmp_path / "README.md").read_text()
    assert str(world.lm) in card and "`cls`" in card and f"{res.trainable_params:,}" in card
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # the trained model reloads from the folder alone
    model = load_run(tmp_path, load_visual=True)
    assert all(torch.equal(p, state["trainable"][n]) for n, p in model.trainable_parameters())


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(world, tmp_path):
    from transformers import AutoTokenizer

    from training.data import CaptionData
    from training.features import FeatureStore

    mc, tc = cfgs(world, steps=6, ckpt_every=2)
    # Corrupt the cached features of the images that first appear in step 3 (a bad cache row).
    tok = AutoTokenizer.from_pretrained(world.lm)
    data = CaptionData(world.train_shards, lambda t: tok(t, add_special_tokens=False)["input_ids"])
    plan = BatchPlan(data.lengths, tc.batch_size, tc.seed, tc.bucket_by_length, tc.bucket_pool)
    seen = {data.image_ids[i] for s in (0, 1) for i in plan.batch(s)}
    bad = sorted({data.image_ids[i] for i in plan.batch(2)} - seen)
    assert bad
    feats = tmp_path / "features"
    shutil.copytree(world.features, feats)
    cls = np.load(feats / "cls.npy")
    cls[FeatureStore(world.features).rows(bad)] = np.nan
    np.save(feats / "cls.npy", cls)
    with pytest.raises(NonFiniteLoss, match="step 3"):
        train(mc, tc, world.train_shards, tmp_path / "run", features_dir=feats, progress=False)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run")] == [2]
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "run"))
    assert all(torch.isfinite(t).all() for t in state["trainable"].values())


def test_resume_refuses_a_different_model(world, tmp_path):
    mc, tc = cfgs(world, steps=2, ckpt_every=1)
    train(mc, tc, world.train_shards, tmp_path, features_dir=world.features, progress=False)
    with pytest.raises(ValueError, match="different model config"):
        train(mc.model_copy(update={"k": 3}), tc.model_copy(update={"steps": 3}), world.train_shards, tmp_path,
              features_dir=world.features, progress=False)


def test_online_encoder_equals_cached_features(world, tmp_path):
    """Preprocessing has no augmentation, so running CLIP every step gives the cached run's curve."""
    mc, tc = cfgs(world, steps=2)
    cached = train(mc, tc, world.train_shards, tmp_path / "c", features_dir=world.features, progress=False)
    online = train(mc, tc.model_copy(update={"use_cached_features": False}), world.train_shards, tmp_path / "o",
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


def test_feature_standardisation_statistics_are_fixed_and_saved(world, tmp_path):
    from training.features import FeatureStore

    mc, tc = cfgs(world, steps=2)
    mc = mc.model_copy(update={"feature_norm": "standardize"})
    res = train(mc, tc, world.train_shards, tmp_path, features_dir=world.features, progress=False)
    store = FeatureStore(world.features)
    train_ids = [i for i in store.ids if i.startswith("train/")]
    cls = store.features(train_ids, {"cls": [-1]})["cls"][-1]
    mean, std = res.model.feature_stats["cls"][-1]
    torch.testing.assert_close(mean, cls.mean(0))  # all 40 training images (fewer than the 4,096 sampled)
    normed = res.model.norm_feats({"cls": {-1: cls}})["cls"][-1]
    torch.testing.assert_close(normed.std(0), torch.ones(cls.shape[1]), rtol=1e-4, atol=1e-4)
    reloaded = load_run(tmp_path, load_visual=False, vis_dim=store.width, n_tokens=store.n_tokens)
    torch.testing.assert_close(reloaded.feature_stats["cls"][-1][1], std)
