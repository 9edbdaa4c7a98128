"""CTranslate2 (MADLAD, Narrativa) and transformers engines on tiny models converted by our own convert_model."""
from __future__ import annotations

import json
import math
import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pydantic import ValidationError  # noqa: E402

from tests.tinymodels import build_tiny_madlad, build_tiny_mbart50, caption_pairs  # noqa: E402
from translation.convert import ConversionError, convert_model  # noqa: E402
from translation.engines.base import BaseEngine, Engine  # noqa: E402
from translation.engines.ct2 import CT2Settings, MadladEngine, NarrativaEngine  # noqa: E402
from translation.engines.hf import HFEngine, HFSettings  # noqa: E402
from translation.engines.seq2seq import EngineConfigError, encode, load_tokenizer, token_batches  # noqa: E402

CT2_ENGINES = {"narrativa": NarrativaEngine, "madlad": MadladEngine}
KINDS = ["narrativa", "madlad"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models on a shared machine: one thread beats contended ones (and CT2 gets intra_threads=1)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory, one_torch_thread):
    """Tiny HF checkpoints (briefly trained on the sample captions) and their float32 / int8 CT2 folders."""
    root = tmp_path_factory.mktemp("tinymodels")
    hf = {
        "narrativa": build_tiny_mbart50(root / "hf-narrativa", init_std=0.02, train_steps=100),
        "madlad": build_tiny_madlad(root / "hf-madlad", train_steps=100),
    }
    ct2 = {(kind, q): convert_model(kind, str(hf[kind]), root / f"ct2-{kind}-{q}", quantization=q)
           for kind in KINDS for q in ("float32", "int8")}
    return {"root": root, "hf": hf, "ct2": ct2}


def ct2_engine(models, kind, quantization="float32", **settings):
    settings = {"compute_type": quantization, "intra_threads": 1, "max_input_length": 64,
                "max_decoding_length": 32} | settings
    return CT2_ENGINES[kind](CT2Settings(model_dir=models["ct2"][(kind, quantization)], **settings))


def hf_engine(models, kind, **settings):
    settings = {"max_input_length": 64, "max_decoding_length": 32, "batch_size": 8} | settings
    return HFEngine(HFSettings(model=str(models["hf"][kind]), kind=kind, **settings))


def sample_texts(n=24, seed=3):
    """English captions of varied length (2 to ~12 words), in random order."""
    texts = sorted({en for en, _ in caption_pairs(20, seed=seed)})
    random.Random(seed).shuffle(texts)
    return texts[:n]


@pytest.mark.parametrize("kind", KINDS)
def test_ct2_and_transformers_greedy_outputs_agree(models, kind):
    texts = sample_texts()
    ct2 = ct2_engine(models, kind).translate_detailed(texts)
    hf = hf_engine(models, kind).translate_detailed(texts)
    assert [t.text for t in ct2] == [t.text for t in hf]
    assert [(t.input_tokens, t.output_tokens, t.output_capped) for t in ct2] == \
           [(t.input_tokens, t.output_tokens, t.output_capped) for t in hf]
    # Same quantity on both sides; T5's tanh-GELU is computed slightly differently by CTranslate2,
    # hence a tolerance (mBART agrees to ~1e-5).
    for a, b in zip(ct2, hf, strict=True):
        assert a.score == pytest.approx(b.score, abs=5e-3)
    # A meaningful comparison: the trained tiny model stops on its own with varied outputs.
    assert len({t.text for t in ct2}) >= 5
    assert sum(not t.output_capped for t in ct2) >= len(texts) // 2


@pytest.mark.parametrize("kind", KINDS)
def test_scores_are_finite_negative_mean_logprobs_and_nothing_is_billed(models, kind):
    texts = sample_texts(12)
    for engine in (ct2_engine(models, kind), ct2_engine(models, kind, "int8"), hf_engine(models, kind)):
        results = engine.translate(texts)
        assert len(results) == len(texts)
        assert all(r.score is not None and math.isfinite(r.score) and r.score < 0 for r in results)
        assert all(r.billed_chars == 0 and r.text for r in results)


@pytest.mark.parametrize("kind", KINDS)
def test_results_keep_input_order_across_length_sorted_batches(models, kind):
    texts = sample_texts(16)
    assert len({len(t.split()) for t in texts}) >= 4  # really different lengths, so sorting moves them
    for engine in (ct2_engine(models, kind, max_batch_tokens=40), hf_engine(models, kind, batch_size=3)):
        together = [r.text for r in engine.translate(texts)]
        one_by_one = [engine.translate([t])[0].text for t in texts]
        assert together == one_by_one
        assert engine.translate([]) == []


@pytest.mark.parametrize("kind", KINDS)
def test_input_truncation_and_decoding_cap_are_detected_and_counted(models, kind):
    texts = sample_texts()
    limit = 8
    tokenizer = load_tokenizer(models["ct2"][(kind, "float32")], kind)
    full_lengths = [len(ids) for ids in encode(tokenizer, kind, texts, max_input_length=10_000).ids]
    expected = sum(n > limit for n in full_lengths)
    assert 0 < expected < len(texts)

    ct2 = ct2_engine(models, kind, max_input_length=limit)
    hf = hf_engine(models, kind, max_input_length=limit)
    a, b = ct2.translate_detailed(texts), hf.translate_detailed(texts)
    assert [t.input_truncated for t in a] == [n > limit for n in full_lengths]
    assert all(t.input_tokens == min(n, limit) for t, n in zip(a, full_lengths, strict=True))
    assert ct2.stats.truncated_inputs == hf.stats.truncated_inputs == expected
    assert [t.text for t in a] == [t.text for t in b]  # both engines cut the same tokens

    capped = ct2_engine(models, kind, max_decoding_length=3)
    out = capped.translate_detailed(texts)
    assert all(t.output_capped for t in out if t.output_tokens >= 3 - (kind == "narrativa"))
    assert capped.stats.capped_outputs == sum(t.output_capped for t in out) > 0
    assert capped.stats.inputs == len(texts)


def test_language_tokens_are_stripped(models):
    texts = sample_texts(8)
    narrativa = ct2_engine(models, "narrativa")
    source = [narrativa.tokenizer.convert_ids_to_tokens(ids)
              for ids in encode(narrativa.tokenizer, "narrativa", texts, 64).ids]
    assert all(s[0] == "en_XX" and s[-1] == "</s>" for s in source)
    raw = narrativa.translator.translate_batch(source, [["pt_XX"]] * len(texts), beam_size=1)
    assert all(r.hypotheses[0][0] == "pt_XX" for r in raw)  # there is a language token to strip
    for engine, tokens in ((narrativa, ("pt_XX", "en_XX", "</s>")),
                           (hf_engine(models, "narrativa"), ("pt_XX", "en_XX", "</s>")),
                           (ct2_engine(models, "madlad"), ("<2pt>", "</s>", "<pad>"))):
        for result in engine.translate(texts):
            assert not any(token in result.text for token in tokens), result.text
    madlad = ct2_engine(models, "madlad")
    assert madlad.tokenizer.convert_ids_to_tokens(encode(madlad.tokenizer, "madlad", texts[:1], 64).ids[0])[0] == "<2pt>"


def test_conversion_applies_the_config_fixes(models):
    source = json.loads((models["hf"]["narrativa"] / "config.json").read_text())
    assert "normalize_before" not in source and "tokenizer_class" not in source  # like Narrativa's
    converted = json.loads((models["ct2"][("narrativa", "float32")] / "config.json").read_text())
    assert converted["decoder_start_token"] == "</s>" and converted["bos_token"] == "<s>"
    manifest = json.loads((models["ct2"][("madlad", "int8")] / "ptvl_conversion.json").read_text())
    assert manifest["kind"] == "madlad" and manifest["quantization"] == "int8"
    # MADLAD's lm_head output scaling (transformers 5 tie_word_embeddings quirk) is proven by the
    # exact score agreement in test_ct2_and_transformers_greedy_outputs_agree.


@pytest.mark.parametrize("bad", ["float16", "int8_float16"])
def test_float16_is_rejected_for_madlad(models, tmp_path, bad):
    with pytest.raises(ConversionError, match="not allowed for madlad.*bfloat16"):
        convert_model("madlad", str(models["hf"]["madlad"]), tmp_path / "out", quantization=bad)
    assert not (tmp_path / "out").exists()
    with pytest.raises(EngineConfigError, match="not allowed for madlad"):
        ct2_engine(models, "madlad", compute_type=bad)
    with pytest.raises(EngineConfigError, match="not allowed for madlad"):
        HFEngine(HFSettings(model=str(models["hf"]["madlad"]), kind="madlad", dtype="float16"))


def test_float16_conversion_is_fine_for_narrativa(models, tmp_path):
    out = convert_model("narrativa", str(models["hf"]["narrativa"]), tmp_path / "fp16", quantization="float16")
    assert (out / "model.bin").stat().st_size < (models["ct2"][("narrativa", "float32")] / "model.bin").stat().st_size


def test_missing_or_wrong_model_folder_is_a_clear_startup_error(models, tmp_path):
    with pytest.raises(EngineConfigError, match="does not exist.*ptvl convert-model narrativa"):
        NarrativaEngine(CT2Settings(model_dir=tmp_path / "nope"))
    with pytest.raises(EngineConfigError, match="not a CTranslate2 madlad model folder.*ptvl convert-model madlad"):
        MadladEngine(CT2Settings(model_dir=models["hf"]["madlad"]))  # an unconverted checkpoint
    with pytest.raises(EngineConfigError, match="holds a madlad model, not narrativa"):
        NarrativaEngine(CT2Settings(model_dir=models["ct2"][("madlad", "int8")]))
    with pytest.raises(EngineConfigError, match="cannot load narrativa checkpoint"):
        HFEngine(HFSettings(model=str(tmp_path / "nope"), kind="narrativa"))


def test_convert_refuses_to_overwrite_without_force(models, tmp_path):
    dest = convert_model("madlad", str(models["hf"]["madlad"]), tmp_path / "m", quantization="int8")
    with pytest.raises(ConversionError, match="already exists"):
        convert_model("madlad", str(models["hf"]["madlad"]), dest, quantization="int8")
    assert convert_model("madlad", str(models["hf"]["madlad"]), dest, quantization="float32", force=True) == dest
    assert json.loads((dest / "ptvl_conversion.json").read_text())["quantization"] == "float32"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging folder left behind


def test_settings_reject_unknown_keys(models):
    with pytest.raises(ValidationError):
        CT2Settings(model_dir=models["root"], beams=4)
    with pytest.raises(ValidationError):
        HFSettings(model="x", kind="madlad", num_beam=4)
    with pytest.raises(ValidationError):
        CT2Settings(model_dir=models["root"], compute_type="int4")
    # "auto" (the default) is resolved from the device before it reaches the id: the id names the real precision.
    auto = ct2_engine(models, "narrativa", "int8", compute_type="auto")
    assert auto.engine_id == ct2_engine(models, "narrativa", "int8").engine_id and ":int8:" in auto.engine_id


def test_engine_ids_are_stable_and_name_what_changes_outputs(models):
    a, b = ct2_engine(models, "narrativa"), ct2_engine(models, "narrativa")
    assert isinstance(a, Engine) and isinstance(hf_engine(models, "madlad"), Engine)
    assert a.engine_id == b.engine_id
    assert a.engine_id.startswith("ct2-narrativa:ct2-narrativa-float32@")
    assert a.engine_id.endswith(":float32:beam1:in64:dec32")
    others = {ct2_engine(models, "narrativa", beam_size=2).engine_id,
              ct2_engine(models, "narrativa", max_decoding_length=16).engine_id,
              ct2_engine(models, "narrativa", "int8").engine_id,
              hf_engine(models, "narrativa").engine_id}
    assert a.engine_id not in others and len(others) == 4


@pytest.mark.parametrize("kind", KINDS)
def test_beam_search_runs_on_both_engines(models, kind):
    texts = sample_texts(6)
    for engine in (ct2_engine(models, kind, beam_size=3), hf_engine(models, kind, num_beams=3)):
        results = engine.translate(texts)
        assert all(r.text and math.isfinite(r.score) and r.score < 0 for r in results)


def test_token_batches_cover_every_input_once_within_the_token_budget():
    rng = random.Random(0)
    lengths = [rng.randint(1, 30) for _ in range(200)] + [90]
    batches = token_batches(lengths, max_tokens=100)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 100 or len(batch) == 1
    assert [len(b) for b in token_batches(lengths, max_tokens=10**9, max_examples=64)] == [64, 64, 64, 9]


CALL_SIZE_SCRIPT = """
import json, os, signal, sys
from pathlib import Path
from translation.engines.ct2 import CT2Settings, NarrativaEngine
from translation.memory import TranslationMemory
from translation.engines.base import BaseEngine
from translation.runner import translate_missing

model_dir, mem_path, texts_path, calls_path, call_size, kill_at = sys.argv[1:7]
inner = NarrativaEngine(CT2Settings(model_dir=model_dir, compute_type="float32", intra_threads=1,
                                    max_input_length=64, max_decoding_length=8, call_size=int(call_size)))

class KilledMidCall(BaseEngine):  # the real engine; the process dies after call `kill_at` translated, before it is stored
    engine_id = inner.engine_id
    call_size = inner.call_size
    n = 0
    def translate(self, texts, context=None):
        out = inner.translate(texts)
        KilledMidCall.n += 1
        with open(calls_path, "a") as f:
            f.write(f"{len(texts)}\\n")
        if KilledMidCall.n == int(kill_at):
            os.kill(os.getpid(), signal.SIGKILL)
        return out

texts = json.loads(Path(texts_path).read_text())
with TranslationMemory(mem_path) as mem:
    translate_missing(texts, KilledMidCall(), mem, batch_size=50)
"""


def many_texts(n: int) -> list[str]:
    """`n` distinct short captions made of the tiny tokenizer's vocabulary."""
    words = sorted({w for t in sample_texts(200) for w in t.split()})
    rng = random.Random(5)
    out: set[str] = set()
    while len(out) < n:
        out.add(" ".join(rng.choice(words) for _ in range(rng.randint(2, 6))))
    return sorted(out)


class CallRecorder(BaseEngine):
    """A real engine, with the size of every call it gets recorded."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner, self.calls = inner, []
        self._id, self.call_size = inner.engine_id, inner.call_size

    @property
    def engine_id(self) -> str:
        return self._id

    def translate(self, texts, context=None):
        self.calls.append(len(texts))
        return self.inner.translate(texts)


def test_ct2_calls_carry_thousands_of_texts_and_a_kill_loses_at_most_one_chunk(models, tmp_path):
    """`[translate] batch_size = 50` (DeepL's request size) no longer caps a CTranslate2 call: the engine's
    own call_size does.  And with a smaller call_size, kill -9 during a call loses only that call's chunk."""
    import subprocess
    import sys
    from pathlib import Path

    from translation.memory import TranslationMemory
    from translation.runner import translate_missing, translations_for

    texts = many_texts(1200)
    engine = CallRecorder(ct2_engine(models, "narrativa", max_decoding_length=8))
    assert engine.call_size == 4096  # the default
    with TranslationMemory(tmp_path / "whole.sqlite") as mem:
        stats = translate_missing(texts + texts[:100], engine, mem, batch_size=50)
        assert engine.calls == [1200] and stats.requests == 1 and stats.sent == 1200
        whole = {r.text_en: r.text_pt for r in translations_for(texts, engine.engine_id, mem)}

    # kill -9 in the third call of 300 (translated, not yet stored): the first two chunks are kept.
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    calls_path, mem_path = tmp_path / "calls.txt", tmp_path / "killed.sqlite"
    proc = subprocess.run(
        [sys.executable, "-c", CALL_SIZE_SCRIPT, str(models["ct2"][("narrativa", "float32")]), str(mem_path),
         str(tmp_path / "texts.json"), str(calls_path), "300", "3"],
        env={**os.environ, "PYTHONPATH": str(root)}, cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert calls_path.read_text().split() == ["300", "300", "300"]
    small = CallRecorder(ct2_engine(models, "narrativa", max_decoding_length=8, call_size=300))
    with TranslationMemory(mem_path) as mem:
        assert mem.stats(small.engine_id).rows == 600  # exactly the two stored chunks
        stats = translate_missing(texts, small, mem, batch_size=50)  # the rerun
        assert stats.hits == 600 and stats.sent == 600 and small.calls == [300, 300]
        resumed = {r.text_en: r.text_pt for r in translations_for(texts, small.engine_id, mem)}
    assert resumed == whole  # same call-size-independent result as the uninterrupted run
