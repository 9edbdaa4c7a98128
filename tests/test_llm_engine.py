"""The `llm` engine on a tiny Llama chat model converted by our own `convert_model("llm", ...)`: CTranslate2's
Generator against transformers `generate` token for token, the engine id, prompts, budgets, stop strings,
truncation, output cleaning, the one-line errors, and the hardware defaults."""
from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
import pytest

from pipeline.checks import check_engines
from pipeline.engines import LLMEntry
from pipeline.settings import ConfigError, load_settings
from pipeline.shards import FilterPolicy
from tests.tinymodels import build_tiny_llm, caption_pairs
from translation.convert import ConversionError, convert_model
from translation.engines import llm as llm_module
from translation.engines.ct2 import CT2Settings, cpu_threads, ct2_engine_id, resolve_compute_type
from translation.engines.llm import LLMEngine
from translation.engines.llm_backends import CT2Generator, HFGenerate, group_by_shape
from translation.engines.llm_prompt import PromptError, clean_output, new_token_budget
from translation.engines.llm_settings import LLMSettings, Raw, llm_engine_id
from translation.engines.seq2seq import EngineConfigError
from translation.errors import ConfigurationError
from translation.memory import TranslationMemory, memory_key
from translation.quality import detect_overgeneration, flag_table
from translation.runner import translate_missing

MESSAGE = "Translate into European Portuguese:\n{source}"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An untrained tiny Llama chat model (peaked random logits: no near-ties, outputs run to the budget) and
    its float32 and int8 CTranslate2 folders."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tinyllm")
    hf = build_tiny_llm(root / "hf", init_std=0.2, hidden=32, vocab_size=600, message=MESSAGE)
    ct2 = {q: convert_model("llm", str(hf), root / f"ct2-{q}", quantization=q) for q in ("float32", "int8")}
    yield {"root": root, "hf": hf, "ct2": ct2}
    torch.set_num_threads(threads)


def settings(models, backend="ct2", quantization="float32", **kw) -> LLMSettings:
    model = str(models["ct2"][quantization] if backend == "ct2" else models["hf"])
    base = dict(model=model, backend=backend, message=MESSAGE, inter_threads=1, intra_threads=1,
                max_new_tokens=24, new_tokens_extra=4)
    if backend == "ct2":
        base["compute_type"] = quantization
    return LLMSettings(**(base | kw))


def texts(n=20, seed=5) -> list[str]:
    """English captions of varied length (2 to ~12 words), in random order."""
    out = sorted({en for en, _ in caption_pairs(30, seed=seed)})
    random.Random(seed).shuffle(out)
    return out[:n]


def test_ct2_generator_equals_hf_generate_token_for_token(models):
    sources = texts()
    ct2, hf = LLMEngine(settings(models)), LLMEngine(settings(models, backend="hf"))
    prompts = ct2.spec.ids(ct2.tokenizer, sources)
    assert prompts == hf.spec.ids(hf.tokenizer, sources)
    assert len({len(p) for p in prompts}) > 3  # prompts of many lengths, batched together
    budgets = [new_token_budget(len(p) // 4, 1.0, 3, 24) for p in prompts]
    a = ct2.backend.generate(prompts, budgets, None)
    b = hf.backend.generate(prompts, budgets, None)
    for raw_a, raw_b, budget in zip(a, b, budgets, strict=True):
        assert raw_a.ids == raw_b.ids and len(raw_a.ids) == budget  # 20 prompts, token for token
        assert raw_a.logprobs == pytest.approx(raw_b.logprobs, abs=1e-3)
    # Through the whole engine: the same kept text, token counts and scores.
    ta, tb = ct2.translate_detailed(sources), hf.translate_detailed(sources)
    assert [t.text for t in ta] == [t.text for t in tb]
    assert [(t.input_tokens, t.output_tokens, t.output_capped) for t in ta] == \
           [(t.input_tokens, t.output_tokens, t.output_capped) for t in tb]
    assert [t.score for t in ta] == pytest.approx([t.score for t in tb], abs=1e-3)
    # An untrained model never ends: every output runs to its budget, and is counted as capped.
    assert all(t.output_capped for t in ta) and ct2.stats.capped_outputs == len(sources)
    assert [t.output_tokens for t in ta] == [new_token_budget(len(ct2.tokenizer(s, add_special_tokens=False)
                                                                   ["input_ids"]), 2.0, 4, 24) for s in sources]


def test_stop_strings_end_decoding_at_the_same_token_in_both_backends(models):
    sources = texts(8)
    free = LLMEngine(settings(models)).translate_detailed(sources)
    # A stop string from the middle of the first output: decoding must stop there.
    stop = free[0].text[len(free[0].text) // 2:][:3]
    assert stop.strip()
    ct2 = LLMEngine(settings(models, stop=[stop]))
    hf = LLMEngine(settings(models, backend="hf", stop=[stop]))
    ta, tb = ct2.translate_detailed(sources), hf.translate_detailed(sources)
    assert ta[0].stopped and ta[0].text == free[0].text.split(stop)[0].strip()
    assert ta[0].output_tokens < free[0].output_tokens and not ta[0].output_capped
    assert [(t.text, t.output_tokens, t.stopped) for t in ta] == [(t.text, t.output_tokens, t.stopped) for t in tb]
    assert ct2.stats.stopped == sum(t.stopped for t in ta) >= 1


def test_int8_beam_and_truncation(models):
    sources = texts(10)
    engine = LLMEngine(settings(models, quantization="int8", beam_size=2, max_input_length=4))
    out = engine.translate_detailed(sources)
    assert len(out) == 10 and all(t.text and t.score is not None for t in out)
    cut = [len(engine.tokenizer(s, add_special_tokens=False)["input_ids"]) > 4 for s in sources]
    assert [t.input_truncated for t in out] == cut and any(cut)
    assert engine.stats.truncated_inputs == sum(cut)
    assert [r.input_truncated for r in engine.translate(sources[:3])] == cut[:3]


def test_engine_id_names_model_prompt_and_decoding_offline(models, tmp_path):
    s = settings(models)
    ident = llm_engine_id(s)
    assert ident == LLMEngine(s).engine_id == llm_engine_id(settings(models))
    assert ident.startswith("llm-ct2:ct2-float32@") and ":float32:beam1:prompt-" in ident
    changed = {
        "prompt": llm_engine_id(settings(models, prompt="English: {source}\nPortuguese:")),
        "message": llm_engine_id(settings(models, message="Translate to pt-PT: {source}")),
        "system": llm_engine_id(settings(models, system="You translate.")),
        "stop": llm_engine_id(settings(models, stop=["\n"])),
        "budget": llm_engine_id(settings(models, max_new_tokens=25)),
        "beam": llm_engine_id(settings(models, beam_size=2)),
        "backend": llm_engine_id(settings(models, backend="hf")),
    }
    assert len({ident, *changed.values()}) == 8
    # The prompt's digest is the only part a prompt changes: a new prompt never reads the old prompt's memory.
    assert changed["prompt"].split(":prompt-")[0] == ident.split(":prompt-")[0]
    # A changed chat template in the model's files is a new prompt too, without loading anything.
    copy = tmp_path / "ct2-float32"
    copy.mkdir()
    for f in models["ct2"]["float32"].iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    same = llm_engine_id(settings(models, model=str(copy)))
    (copy / "chat_template.jinja").write_text("{{ messages[0]['content'] }}\n")
    assert llm_engine_id(settings(models, model=str(copy))) not in (same, ident)
    # "auto" resolves from the device alone: int8 on CPU, so `auto` and int8 share a memory.
    auto = settings(models, quantization="int8", compute_type="auto")
    assert llm_engine_id(auto) == llm_engine_id(settings(models, quantization="int8")) and ":int8:" in llm_engine_id(auto)


class _Echo:
    """A backend whose outputs are given texts (the tiny model's tokenizer turns them into ids)."""

    def __init__(self, tokenizer, outputs: list[str]):
        self.tokenizer, self.outputs = tokenizer, outputs
        self.end_ids = {tokenizer.eos_token_id}

    def generate(self, prompts, budgets, stop_at):
        return [Raw(self.tokenizer(o, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id],
                    [-0.1] * 99) for o in self.outputs[:len(prompts)]]

    def close(self):
        pass


def test_echoes_are_stripped_and_an_echo_only_output_is_stored_as_nothing(models, monkeypatch, tmp_path):
    real = CT2Generator(settings(models))
    outputs = [
        "Translate into European Portuguese:\na red circle",                  # only the prompt echoed
        "Translate into European Portuguese:\na red star\numa estrela vermelha",  # echo, then the answer
        "Portuguese: um quadrado azul",                                        # an answer label
        "   ",                                                                 # nothing
        "um círculo verde\nEnglish: a green star",                             # runs on: kept, flagged
    ]
    monkeypatch.setattr(llm_module, "open_backend", lambda s: _Echo(real.tokenizer, outputs))
    engine = LLMEngine(settings(models, new_tokens_extra=64, max_new_tokens=64))
    sources = ["a red circle", "a red star", "a blue square", "a dog", "a green circle"]
    out = engine.translate_detailed(sources)
    assert [t.text for t in out] == ["", "uma estrela vermelha", "um quadrado azul", "",
                                     "um círculo verde\nEnglish: a green star"]
    assert [t.echo for t in out] == [True, True, False, False, False]
    assert (engine.stats.echo_stripped, engine.stats.empty) == (2, 2)
    # Through the runner into a memory: an echo-only or empty output is stored as "" (no translation), which
    # the `empty` flag marks; a run-on is kept as generated for the `overgeneration` flag.
    with TranslationMemory(tmp_path / "m.sqlite") as mem:
        translate_missing(sources, engine, mem)
        rows = mem.lookup(engine.engine_id, [memory_key(t) for t in sources])
        stored = pl.DataFrame({"text_en": sources, "text_pt": [rows[memory_key(t)].text_pt for t in sources],
                               "score": [rows[memory_key(t)].score for t in sources]})
    assert stored["text_pt"].to_list() == [t.text for t in out]
    flagged = flag_table(stored)
    assert flagged["flags"].to_list() == [["empty"], [], [], ["empty"], ["overgeneration"]]
    # The default drop policy keeps neither an empty output nor a run-on out of the shards.
    assert {"empty", "overgeneration"} <= set(FilterPolicy().drop)


def test_clean_output_rules():
    echoes = ["English: a cat\nPortuguese:", "English:"]
    assert clean_output("um gato", "a cat", echoes, []).text == "um gato"
    assert clean_output("English: a cat\nPortuguese: um gato", "a cat", echoes, []).text == "um gato"
    assert clean_output("English: a cat\nPortuguese:", "a cat", echoes, []).text == ""
    assert clean_output("\num gato\nEnglish: a dog", "a cat", echoes, ["\n"]).text == "um gato"
    # 'Translate' at the start of 'Translated' is not an echo of the instruction 'Translate'.
    assert clean_output("Translated text", "x", ["Translate"], []).text == "Translated text"
    # A label the source has too is the translation's own.
    assert clean_output("Tradução: um livro", "Translation: a book", [], []).text == "Tradução: um livro"
    assert new_token_budget(10, 2.0, 16, 256) == 36 and new_token_budget(500, 2.0, 16, 256) == 256


def test_overgeneration_flag():
    assert detect_overgeneration("a cat", "um gato\nEnglish: a dog").startswith("overgeneration: 2 lines")
    assert "a new prompt block (en:)" in detect_overgeneration("a cat", "um gato English: a dog")
    assert "<|im_start|>" in detect_overgeneration("a cat", "um gato<|im_start|>user")
    for en, pt in [("a cat", "um gato"), ("time: 10:30", "hora: 10h30"), ("two\nlines", "duas\nlinhas"),
                   ('a sign "english: here"', 'um letreiro "inglês: aqui"')]:
        assert detect_overgeneration(en, pt) is None, (en, pt)
    with pytest.raises(ValueError, match="unknown quality flag"):
        FilterPolicy(drop=["empty", "overgenerated"])


def test_bad_prompts_are_one_line_errors(models, tmp_path):
    with pytest.raises(PromptError, match=r"has no \{source\}"):
        LLMEngine(settings(models, prompt="Translate this."))
    # A base model without a chat template needs a prompt.
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in models["ct2"]["float32"].iterdir():
        if f.name != "chat_template.jinja":
            (bare / f.name).write_bytes(f.read_bytes())
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(PromptError, match="has no chat template and the profile sets no prompt"):
        LLMEngine(settings(models, model=str(bare)))
    assert LLMEngine(settings(models, model=str(bare), prompt="English: {source}\nPortuguese:")).translate(["a cat"])
    profile = tmp_path / "p.toml"
    for table, expect in ((f'model = "{bare}"', "has no chat template"),
                          (f'model = "{bare}"\nprompt = "no source here"', r"has no \{source\}"),
                          (f'model = "{tmp_path / "missing"}"', "does not exist; create it with `ptvl convert-model llm")):
        profile.write_text(f'[run]\nroot = "{tmp_path / "run"}"\n[translate]\nengines = ["x"]\n'
                           f'[engines.x]\nengine = "llm"\n{table}\n[training]\nengine = "x"\n')
        with pytest.raises(ConfigError, match=expect) as err:
            check_engines(load_settings(profile))
        assert "\n" not in str(err.value)


def test_vllm_backend_is_guarded_on_import(models):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(EngineConfigError, match=r'pip install "ptvl\[vllm\]"') as err:
            LLMEngine(settings(models, backend="vllm", device="cuda"))
        assert "\n" not in str(err.value)
    else:  # pragma: no cover - only on a machine with vLLM (then its GPU test runs elsewhere)
        pytest.skip("vLLM is installed here; the backend is exercised on a GPU machine")


def test_conversion_refuses_what_ct2_cannot_run(models, tmp_path):
    from tests.tinymodels import build_tiny_mbart50

    seq2seq = build_tiny_mbart50(tmp_path / "mbart")
    with pytest.raises(ConversionError, match="expects a causal"):
        convert_model("llm", str(seq2seq), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    from training.lm_pretrain import pretrain_tiny_lm  # a GPT-Neo (Glória's family): no CTranslate2 loader

    neo = pretrain_tiny_lm(["um gato", "um cão"] * 4, tmp_path / "neo", hidden=16, layers=1, heads=2,
                           vocab_size=280, seq_len=8, max_positions=16, steps=0)
    with pytest.raises(ConversionError, match='run it with backend = "hf"'):
        convert_model("llm", str(neo), tmp_path / "out")
    with pytest.raises(ConfigurationError):
        HFGenerate(settings(models, backend="hf", model=str(tmp_path / "nowhere")))


def test_hardware_defaults_and_token_batches():
    assert cpu_threads("cpu", None, None, cores=2) == (2, 1)
    assert cpu_threads("cpu", None, None, cores=16) == (4, 4)
    assert cpu_threads("cpu", 1, None, cores=8) == (1, 8) and cpu_threads("cpu", 3, 2, cores=8) == (3, 2)
    assert cpu_threads("cuda", None, None) == (1, 0)
    assert resolve_compute_type("auto", "cpu", "madlad") == "int8"
    assert resolve_compute_type("auto", "cuda", "madlad") == "bfloat16"
    assert resolve_compute_type("auto", "cuda", "narrativa") == resolve_compute_type("auto", "cuda", "llm") \
        == "int8_float16"
    assert LLMSettings(model="m", device="cuda", backend="hf").precision() == "bfloat16"
    assert LLMSettings(model="m", backend="hf").precision() == "float32"
    # A CT2 profile that says nothing gets int8 on CPU, the same engine id as an explicit int8.
    assert ct2_engine_id(CT2Settings(model_dir=Path("/nowhere")), "madlad") == \
        ct2_engine_id(CT2Settings(model_dir=Path("/nowhere"), compute_type="int8"), "madlad")
    # CTranslate2 calls: one per (prompt length, budget), so a batch never mixes prompt lengths.
    groups = group_by_shape([[1, 2], [3, 4, 5], [6, 7], [8, 9]], [5, 5, 5, 6])
    assert groups == {(3, 5): [1], (2, 6): [3], (2, 5): [0, 2]}


def test_profile_entry_resolves_models_and_accepts_the_sample_folders(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text(f'[run]\nroot = "{tmp_path / "run"}"\n[sample]\nenabled = true\n[translate]\n'
                       'engines = ["reference", "x"]\n[engines.x]\nengine = "llm"\nmodel = "{models}/sample-llm-ct2"\n'
                       'message = "Translate into European Portuguese:\\n{source}"\n')
    s = load_settings(profile)
    entry = s.engines["x"]
    assert isinstance(entry, LLMEntry) and entry.model == str(tmp_path / "run" / "models" / "sample-llm-ct2")
    check_engines(s)  # the sample run builds that folder itself
    other = profile.read_text().replace("sample-llm-ct2", "elsewhere")
    profile.write_text(other)
    with pytest.raises(ConfigError, match="does not exist"):
        check_engines(load_settings(profile))
