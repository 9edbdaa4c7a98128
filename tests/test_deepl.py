"""The DeepL engine with the real `deepl` client against the local fake server (tests/fake_deepl.py)."""
from __future__ import annotations

import json
import logging
import secrets as pysecrets

import deepl
import deepl.http_client
import pytest

from tests.fake_deepl import MAX_BODY_BYTES, FakeDeepL, fake_translation
from translation.cost import estimate
from translation.engines.base import Engine
from translation.engines.deepl_api import DeepLEngine, DeepLSettings
from translation.errors import ConfigurationError, EngineError, QuotaExceeded
from translation.memory import TranslationMemory, memory_key
from translation.runner import translate_missing, translations_for
from translation.secrets import Secret


@pytest.fixture()
def key() -> str:
    return f"k3y-{pysecrets.token_hex(12)}:fx"


@pytest.fixture(autouse=True)
def fast_client_retries(monkeypatch):
    # Keep the client's own retry loop, with its exponential backoff scaled down for tests.
    monkeypatch.setattr(deepl.http_client._BackoffTimer, "BACKOFF_INITIAL", 0.01)
    monkeypatch.setattr(deepl.http_client._BackoffTimer, "BACKOFF_MAX", 0.05)
    # The engine sets these process-wide; monkeypatch restores the client's defaults afterwards.
    monkeypatch.setattr(deepl.http_client, "max_network_retries", deepl.http_client.max_network_retries)
    monkeypatch.setattr(deepl.http_client, "min_connection_timeout", deepl.http_client.min_connection_timeout)


@pytest.fixture()
def server(key):
    with FakeDeepL(key) as s:
        yield s


@pytest.fixture()
def mem(tmp_path):
    with TranslationMemory(tmp_path / "memory.sqlite") as m:
        yield m


def make_engine(server: FakeDeepL, key: str, **kw) -> DeepLEngine:
    return DeepLEngine(DeepLSettings(server_url=server.url, **kw), auth_key=Secret(key))


def captions(n: int, start: int = 0) -> list[str]:
    return [f"a photo of {i} dogs running on the beach near a red boat" for i in range(start, start + n)]


def test_engine_protocol_and_id(server, key):
    eng = make_engine(server, key)
    assert isinstance(eng, Engine)
    assert eng.engine_id == "deepl:en>pt-pt:split=off:formality=default:glossary=none:context=off"
    assert make_engine(server, key, formality="more").engine_id != eng.engine_id
    assert make_engine(server, key, use_context=True).engine_id.endswith("context=on")
    out = eng.translate(["a dog", "ã çé 🙂"])
    assert [r.text for r in out] == ["PT[a dog]", "PT[ã çé 🙂]"]
    assert [r.billed_chars for r in out] == [5, 6]  # source characters (code points), as DeepL counts


def test_batch_limits_respected(server, key, mem):
    eng = make_engine(server, key)
    short = captions(230)
    # Non-ASCII text is sent as \\uXXXX escapes (6 bytes a character): these hit the byte limit first.
    long = [f"{i:04d} " + "ção " * 1500 for i in range(40)]
    stats = translate_missing(short + long, eng, mem, batch_size=1000)
    reqs = server.translate_requests()
    assert stats.sent == 270 and sum(len(r.texts) for r in reqs) == 270
    assert max(len(r.texts) for r in reqs) == 50
    assert max(r.body_bytes for r in reqs) <= MAX_BODY_BYTES
    assert max(r.body_bytes for r in reqs) > 0.85 * MAX_BODY_BYTES  # the limit is used, not feared
    # Each request is full: it had 50 texts, or the next text would have pushed it over 128 KiB.
    for cur, nxt in zip(reqs, reqs[1:], strict=False):
        assert len(cur.texts) == 50 or cur.body_bytes + 2 + len(json.dumps(nxt.texts[0])) > MAX_BODY_BYTES
    # The engine measures bodies exactly as the client encodes them.
    assert [eng.request_bytes(r.texts) for r in reqs] == [r.body_bytes for r in reqs]
    # The engine splits a big list itself too, when called directly.
    server.requests.clear()
    assert len(eng.translate(captions(120, 1000))) == 120
    assert [len(r.texts) for r in server.translate_requests()] == [50, 50, 20]


def test_text_longer_than_a_request_is_a_clear_error(server, key):
    with pytest.raises(EngineError, match="alone exceeds"):
        make_engine(server, key).translate(["ç" * 30_000])


@pytest.mark.parametrize("status,n", [(429, 4), (503, 2), (500, 3)])
def test_recovers_from_429_storms_and_5xx_via_client_retries(server, key, mem, status, n):
    eng = make_engine(server, key, max_network_retries=5)
    texts = captions(120)
    translate_missing(texts[:50], eng, mem)
    server.storm(status, n)
    stats = translate_missing(texts, eng, mem)
    assert (stats.hits, stats.sent) == (50, 70)
    assert [r.status for r in server.requests[1:]].count(status) == n
    assert [r.text_pt for r in translations_for(texts, eng.engine_id, mem)] == [fake_translation(t) for t in texts]
    assert sorted(server.sent_texts()) == sorted(texts)  # every text paid exactly once


def test_storm_longer_than_retries_stops_with_stored_work_kept(server, key, mem):
    eng = make_engine(server, key, max_network_retries=2)
    texts = captions(150)
    translate_missing(texts[:100], eng, mem)
    server.storm(429, 3)  # one more than the client retries
    with pytest.raises(EngineError, match=r"HTTP 429.*100 of 150 distinct texts stored.*other 50"):
        translate_missing(texts, eng, mem)
    assert mem.stats(eng.engine_id).rows == 100
    stats = translate_missing(texts, eng, mem)  # resume once the storm is over
    assert (stats.hits, stats.sent) == (100, 50)
    assert sorted(server.sent_texts()) == sorted(texts)


def test_quota_456_stops_cleanly_then_resumes_without_paying_twice(server, key, mem):
    eng = make_engine(server, key)
    texts = captions(200)
    three_requests = sum(len(t) for t in texts[:150])
    server.character_limit = three_requests + 10  # room for three requests of 50
    with pytest.raises(QuotaExceeded) as err:
        translate_missing(texts + texts[:20], eng, mem)
    e = err.value
    assert (e.done, e.remaining) == (150, 50)
    msg = str(e)
    assert "HTTP 456" in msg and "150 of 200 distinct texts" in msg and "50 remain" in msg
    assert "rerun the same command" in msg and str(mem.path) in msg
    assert mem.stats(eng.engine_id).rows == 150  # flushed: every completed request is stored
    assert mem.stats(eng.engine_id).billed_chars == eng.usage().character.count == three_requests
    server.character_limit = None  # next billing period
    stats = translate_missing(texts, eng, mem)
    assert (stats.hits, stats.sent) == (150, 50)
    assert sorted(server.sent_texts()) == sorted(texts)


def test_billed_chars_match_server_rerun_sends_zero_duplicates_once(server, key, mem):
    eng = make_engine(server, key)
    texts = (["yes", "no"] * 300 + captions(90) + ["ã çé 🙂 naïve café"] * 5 + ["yes"])
    stats = translate_missing(texts, eng, mem)
    distinct = list(dict.fromkeys(texts))
    assert (stats.rows, stats.unique, stats.hits, stats.sent) == (len(texts), len(distinct), 0, len(distinct))
    assert sorted(server.sent_texts()) == sorted(distinct)  # "yes" and "no" sent once each
    server_chars = eng.usage().character.count
    assert server_chars == sum(len(t) for t in distinct)
    assert mem.stats(eng.engine_id).billed_chars == stats.billed_chars == server_chars
    assert estimate(texts, mem, eng.engine_id, 20.0).chars == 0  # dry run: nothing left to pay
    n_requests = len(server.requests)
    again = translate_missing(texts, eng, mem)
    assert (again.hits, again.sent, again.billed_chars) == (len(distinct), 0, 0)
    assert len(server.requests) == n_requests and eng.usage().character.count == server_chars


def test_slow_bodies(server, key, mem):
    eng = make_engine(server, key, timeout_s=1.0, max_network_retries=3)
    server.slow_s = 0.2  # slow but within the timeout: just slower
    translate_missing(captions(60), eng, mem)
    assert mem.stats(eng.engine_id).rows == 60
    server.slow_s = 0.0
    server.slow_next, server.slow_next_s = 1, 2.5  # one body later than the timeout: the client retries
    texts = captions(40, 500)
    stats = translate_missing(texts, eng, mem)
    assert stats.sent == 40 and mem.stats(eng.engine_id).rows == 100
    # The server billed the timed-out request too: a client timeout can cost one request twice.
    lost = eng.usage().character.count - mem.stats(eng.engine_id).billed_chars
    assert lost == sum(len(t) for t in texts)


def test_context_policy(server, key, mem):
    free = make_engine(server, key)
    with pytest.raises(ConfigurationError, match="context policy is off"):
        translate_missing(["yes"], free, mem, contexts=["a dog on a sofa"])
    with pytest.raises(ValueError, match="use_context is off"):
        free.translate(["yes"], context="a dog")
    ctx_engine = make_engine(server, key, use_context=True)
    answers = ["yes", "yes", "no", "yes"]
    ctxs = ["a dog on a sofa", "a dog on a sofa", "a dog on a sofa", "a red car"]
    stats = translate_missing(answers, ctx_engine, mem, contexts=ctxs)
    assert stats.sent == 3  # (yes, sofa), (no, sofa), (yes, car)
    assert sorted((r.context, tuple(r.texts)) for r in server.translate_requests()) == [
        ("a dog on a sofa", ("yes", "no")), ("a red car", ("yes",))]
    rows = translations_for(answers, ctx_engine.engine_id, mem, contexts=ctxs)
    assert [r.text_pt for r in rows] == [fake_translation(a, c) for a, c in zip(answers, ctxs, strict=True)]
    assert rows[0].text_hash == memory_key("yes", "a dog on a sofa")
    # Context is not billed.
    assert mem.stats(ctx_engine.engine_id).billed_chars == ctx_engine.usage().character.count == 3 + 2 + 3
    # A context-free lookup never sees context-keyed translations.
    assert mem.missing(free.engine_id, [memory_key("yes")]) == [memory_key("yes")]


def test_glossary_by_name_or_id(key, mem):
    gid = "6f5b1c0e-1111-4a2b-9c3d-0123456789ab"
    glossaries = [{"glossary_id": gid, "name": "ptvl-captions", "ready": True, "source_lang": "en",
                   "target_lang": "pt", "creation_time": "2024-01-01T00:00:00.000Z", "entry_count": 3}]
    with FakeDeepL(key, glossaries=glossaries) as server:
        eng = make_engine(server, key, glossary="ptvl-captions")
        assert f"glossary={gid}" in eng.engine_id
        assert eng.engine_id == make_engine(server, key, glossary=gid).engine_id
        assert eng.translate(["a bus"])[0].text == fake_translation("a bus", glossary_id=gid)
        assert server.translate_requests()[-1].glossary_id == gid
        with pytest.raises(ConfigurationError, match="no glossary with that name"):
            make_engine(server, key, glossary="nope")


def test_settings_reject_unknown_keys_and_limits():
    with pytest.raises(ValueError, match="extra"):
        DeepLSettings(formalty="more")
    with pytest.raises(ValueError):
        DeepLSettings(max_texts_per_request=51)
    assert DeepLSettings().price_per_million_chars == 20.0


def test_missing_key_is_a_configuration_error(monkeypatch, tmp_path):
    monkeypatch.delenv("DEEPL_AUTH_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="set the environment variable DEEPL_AUTH_KEY"):
        DeepLEngine(DeepLSettings(server_url="http://127.0.0.1:9"))
    with pytest.raises(ConfigurationError, match="cannot read DeepL key file"):
        DeepLEngine(DeepLSettings(server_url="http://127.0.0.1:9", auth_key_file=tmp_path / "absent"))


def test_key_from_env_or_file(monkeypatch, tmp_path, server, key):
    monkeypatch.setenv("DEEPL_AUTH_KEY", key)
    assert DeepLEngine(DeepLSettings(server_url=server.url)).translate(["a"])[0].text == "PT[a]"
    monkeypatch.delenv("DEEPL_AUTH_KEY")
    (tmp_path / "deepl.key").write_text(key + "\n")
    eng = DeepLEngine(DeepLSettings(server_url=server.url, auth_key_file=tmp_path / "deepl.key"))
    assert eng.translate(["b"])[0].text == "PT[b]"


def test_key_never_leaks(tmp_path, monkeypatch, caplog, key):
    caplog.set_level(logging.DEBUG)
    for name in ("deepl", "urllib3", "requests", "translation"):
        caplog.set_level(logging.DEBUG, logger=name)
    key_file = tmp_path / "deepl.key"
    key_file.write_text(key)
    settings = DeepLSettings(auth_key_file=key_file, server_url=None)
    errors: list[str] = []
    with FakeDeepL(key, character_limit=400) as server:
        settings = settings.model_copy(update={"server_url": server.url})
        eng = DeepLEngine(settings)
        with TranslationMemory(tmp_path / "memory.sqlite") as mem:
            translate_missing(captions(5), eng, mem)
            with pytest.raises(QuotaExceeded) as e1:  # 456 path
                translate_missing(captions(20, 100), eng, mem)
            errors += [str(e1.value), repr(e1.value)]
            server.echo_auth_in_errors = True  # a server that puts the header in its error message
            server.character_limit = None
            server.storm(400, 1)
            with pytest.raises(EngineError) as e2:
                eng.translate(["a cat"])
            errors += [str(e2.value), repr(e2.value)]
            mem.export_parquet(tmp_path / "export.parquet")
        wrong = DeepLEngine(settings, auth_key=Secret(key + "x"))  # 403 path, server echoes the wrong key
        with pytest.raises(ConfigurationError) as e3:
            wrong.translate(["a"])
        errors += [str(e3.value), repr(e3.value)]
        logging.getLogger("translation.test").warning("leak attempt %s", key)
        # The key did travel where it must (the Authorization header) ...
        assert all(r.auth.endswith(key) for r in server.requests if r.status != 403)
    # ... and nowhere else.
    assert "you sent Authorization" in errors[2] and "***" in errors[2]  # the echo was there, redacted
    logs = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "Response details" in logs and "***" in logs  # DEBUG client logs were captured, redacted
    blobs = {
        "logs": logs,
        "errors": "\n".join(errors),
        "engine_id": eng.engine_id + repr(eng),
        "settings": settings.model_dump_json() + repr(settings),
        "secret repr": repr(Secret(key)) + str(Secret(key)),
    }
    for name, text in blobs.items():
        assert key not in text, name
    for path in list(tmp_path.glob("memory.sqlite*")) + [tmp_path / "export.parquet"]:
        assert key.encode() not in path.read_bytes(), path.name
