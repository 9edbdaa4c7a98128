"""`ptvl review`'s web app (pipeline/review), driven with Starlette's TestClient over a small run root
built here: two engines' translated tables (CC3M and VisDial), an img2dataset parquet shard, a VisDial
dialog.  Queues and their counts, the row page's data, every action stored in the human overlay with
its provenance, two tabs editing one row, path traversal, and malformed requests.  (The token, origin,
host and body-limit guards: tests/test_review_guard.py.)"""
from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sacrebleu.metrics import CHRF
from starlette.testclient import TestClient

from pipeline.contracts import AVAILABILITY, DIALOGS, TRANSLATED
from pipeline.review.app import MAX_TEXT_CHARS, create_app
from pipeline.review.queues import sample_rank
from pipeline.review.tables import NoTranslations, RunTables
from tests.helpers import jpeg
from translation.overlay import HumanOverlay
from translation.textkey import text_hash

SPLITS = [("cc3m", "train"), ("visdial", "val")]
# (segment id, item id, field, EN, reference PT, other PT, score, flags)
CC3M = [
    ("cc3m/train/0", "cc3m/train/0", "caption", "a dog runs on the beach", "um cão corre na praia",
     "um cão a correr na praia", -0.5, []),
    ("cc3m/train/1", "cc3m/train/1", "caption", "a red car", "a red car", "um carro vermelho", -2.0, ["untranslated"]),
    ("cc3m/train/2", "cc3m/train/2", "caption", "a bus on the street", "um ônibus na rua", "um autocarro na rua",
     -1.0, ["brazilian"]),
    ("cc3m/train/3", "cc3m/train/3", "caption", "a cat", "um gato", "um gato", -0.1, []),
]
VISDIAL = [
    ("visdial/val/caption/7", "visdial/7", "caption", "two cats on a sofa", "dois gatos num sofá",
     "dois gatos num sofá", None, []),
    ("visdial/val/question/0", "visdial/val/questions", "question", "what color are they?", "de que cor são?",
     "que cor são eles?", None, []),
    ("visdial/val/question/1", "visdial/val/questions", "question", "are they sleeping?", "estão a dormir?",
     "eles estão dormindo?", None, ["brazilian"]),
    ("visdial/val/answer/0", "visdial/val/answers", "answer", "black", "pretos", "pretos", None, []),
    ("visdial/val/answer/1", "visdial/val/answers", "answer", "yes", "sim", "sim", None, []),
    # offered as an option in round 2, never a ground-truth answer (most of VisDial's answer list is like this)
    ("visdial/val/answer/2", "visdial/val/answers", "answer", "maybe", "talvez", "talvez", None, []),
]
SECRET = b"TOP-SECRET-OUTSIDE-THE-ROOT"
TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"token {TOKEN}"}


def make_app(root: Path, tables: RunTables, overlay: HumanOverlay, **kw):
    """The app as `ptvl review` builds it, answering TestClient's Host (testserver) with TOKEN."""
    return create_app(root, tables, overlay, token=TOKEN, hosts=kw.pop("hosts", ["testserver"]),
                      **{"who": "ana", **kw})


def client_of(app, **kw) -> TestClient:
    return TestClient(app, headers=AUTH, **kw)


IMAGES = {"000000000": jpeg((24, 16), (200, 30, 30)), "000000001": jpeg((24, 16), (30, 200, 30))}


def _translated(path: Path, rows: list[tuple], engine: str, pt_index: int, dataset: str, split: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [{"segment_id": s, "dataset": dataset, "split": split, "item_id": item, "field": field,
                "text_en": en, "text_hash": text_hash(en), "engine": engine, "engine_id": f"{engine}:v1",
                "text_pt": r[pt_index], "score": score, "flags": flags,
                "flag_reasons": [f"{f}: evidence" for f in flags]}
               for r in rows for s, item, field, en, score, flags in [(r[0], r[1], r[2], r[3], r[6], r[7])]]
    pq.write_table(pa.Table.from_pylist(records, schema=TRANSLATED), path)


def build_root(root: Path, engines: tuple[str, ...] = ("reference", "other")) -> Path:
    for engine, col in zip(engines, (4, 5), strict=False):
        _translated(root / "translated" / engine / "cc3m" / "train.parquet", CC3M, engine, col, "cc3m", "train")
        _translated(root / "translated" / engine / "visdial" / "val.parquet", VISDIAL, engine, col, "visdial", "val")
    images = root / "images" / "cc3m" / "train"
    (images / "shards").mkdir(parents=True)
    pq.write_table(pa.table({"key": list(IMAGES), "jpg": list(IMAGES.values())}), images / "shards" / "00000.parquet")
    # An image whose shard is a symlink to a file outside the root, and one whose recorded folder leaves it.
    outside = root.parent / "outside"
    outside.mkdir()
    pq.write_table(pa.table({"key": ["000000002"], "jpg": [SECRET]}), outside / "00001.parquet")
    (images / "shards" / "00001.parquet").symlink_to(outside / "00001.parquet")
    (outside / "secret.txt").write_bytes(SECRET)
    avail = [("cc3m/train/0", "success", "000000000", "shards"), ("cc3m/train/1", "success", "000000001", "shards"),
             ("cc3m/train/2", "success", "000000002", "shards"), ("cc3m/train/3", "success", "000000000",
                                                                  "../../../../outside")]
    pq.write_table(pa.Table.from_pylist(
        [{"image_id": i, "url": f"file:///x/{i}", "status": s, "reason": "ok", "error_message": None, "key": k,
          "shards_dir": d} for i, s, k, d in avail], schema=AVAILABILITY), images / "availability.parquet")
    dialogs = root / "sources" / "visdial" / "val"
    dialogs.mkdir(parents=True)
    rnd = [{"question": 0, "answer": 0, "answer_options": [0, 1], "gt_index": 0},
           {"question": 1, "answer": 1, "answer_options": [0, 1, 2], "gt_index": 1}]
    pq.write_table(pa.Table.from_pylist(
        [{"image_id": "visdial/7", "visdial_image_id": 7, "caption_segment_id": "visdial/val/caption/7",
          "rounds": rnd, "dense_round": None, "dense_relevance": None}], schema=DIALOGS), dialogs / "dialogs.parquet")
    return root


@pytest.fixture
def run(tmp_path):
    root = build_root(tmp_path / "run")
    tables = RunTables(root, ["reference", "other"], SPLITS, "reference")
    overlay = HumanOverlay(root / "memory" / "human.sqlite")
    app = make_app(root, tables, overlay, queue_size=3, seed=7)
    with client_of(app) as client:
        yield client, overlay, root
    overlay.close()


H = {r[3]: text_hash(r[3]) for r in CC3M + VISDIAL}


def queues(client) -> dict[str, dict]:
    return {q["name"]: q for q in client.get("/api/queues?disagree=1").json()["queues"]}


def test_queues_hold_the_right_rows_in_order_with_counts(run) -> None:
    client, _, root = run
    q = queues(client)
    assert list(q) == ["flag:untranslated", "flag:brazilian", "worst", "qe", "disagree", "sample"]
    # no QE scores in this run: the queue is empty and says how to get them
    assert q["qe"]["total"] == 0 and "qe_model" in client.get("/api/queue/qe").json()["note"]
    assert (q["flag:untranslated"]["total"], q["flag:brazilian"]["total"]) == (1, 2)
    assert all(v["reviewed"] == 0 for v in q.values())
    assert client.get("/api/queue/flag:untranslated").json()["hashes"] == [H["a red car"]]
    # brazilian: lowest score first, unscored (VisDial) last
    assert client.get("/api/queue/flag:brazilian").json()["hashes"] == [H["a bus on the street"], H["are they sleeping?"]]
    # worst: the 3 lowest scores of the 4 scored rows (VisDial rows have no score)
    assert client.get("/api/queue/worst").json()["hashes"] == [H["a red car"], H["a bus on the street"],
                                                              H["a dog runs on the beach"]]
    # disagree: chrF of reference against other, lowest first; identical outputs score 100 and come last
    chrf = CHRF()
    expect = sorted((chrf.sentence_score(r[4], [r[5]]).score, text_hash(r[3])) for r in CC3M + VISDIAL)[:3]
    got = client.get("/api/queue/disagree").json()
    assert got["hashes"] == [h for _, h in expect]
    assert got["scores"] == pytest.approx([s for s, _ in expect])
    assert got["hashes"][0] == H["a red car"] and got["scores"][0] < 30
    # sample: 3 of the 9 strings, ranked by a hash of seed and text_hash: the same in a new app (a restart)
    sample = client.get("/api/queue/sample").json()["hashes"]
    assert sample == sorted(H.values(), key=lambda h: sample_rank(7, h))[:3]
    again = make_app(root, RunTables(root, ["reference", "other"], SPLITS, "reference"),
                     HumanOverlay(root / "memory" / "human.sqlite"), who="x", queue_size=3, seed=7)
    assert client_of(again).get("/api/queue/sample").json()["hashes"] == sample
    page = client.get("/")
    assert page.status_code == 200 and "flag: untranslated" in page.text and "0 / 2" in page.text


def test_one_engine_the_disagree_queue_says_it_needs_two(tmp_path) -> None:
    root = build_root(tmp_path / "run", engines=("reference",))
    app = make_app(root, RunTables(root, ["reference", "other"], SPLITS, "reference"),
                   HumanOverlay(root / "memory" / "human.sqlite"))
    q = queues(client_of(app))["disagree"]
    assert q["total"] == 0 and "needs a second engine" in q["note"]
    assert "This queue is empty" in client_of(app).get("/q/disagree/0").text


def test_no_translated_tables_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(NoTranslations, match="no translated tables for engine 'reference'.*--until translate"):
        RunTables(tmp_path, ["reference"], SPLITS, "reference")


def test_a_row_shows_every_engine_flags_image_and_dialog_context(run) -> None:
    client, overlay, root = run
    row = client.get(f"/api/row/{H['a red car']}").json()
    assert [(m["engine"], m["text_pt"]) for m in row["machine"]] == [("reference", "a red car"),
                                                                     ("other", "um carro vermelho")]
    assert row["machine"][0]["flags"] == [{"flag": "untranslated", "reason": "untranslated: evidence"}]
    assert row["images"] == [{"dataset": "cc3m", "split": "train", "image_id": "cc3m/train/1"}]
    img = client.get("/image/cc3m/train/cc3m/train/1")
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    assert img.content == IMAGES["000000001"]
    page = client.get("/q/flag:untranslated/0").text
    assert 'src="/image/cc3m/train/cc3m/train/1"' in page and 'class="flag-name">untranslated' in page
    assert "um carro vermelho" in page and "1 / 1" not in page and "0 / 1 reviewed" in page
    # VisDial: the question of round 2 comes with the caption and rounds 1-2, round 2 marked
    dialog = client.get(f"/api/row/{H['are they sleeping?']}").json()["dialogs"]
    assert len(dialog) == 1 and dialog[0]["caption"]["pt"] == "dois gatos num sofá"
    assert [(r["round"], r["marked"], r["question"]["en"], r["answer"]["pt"]) for r in dialog[0]["rounds"]] == [
        (1, False, "what color are they?", "pretos"), (2, True, "are they sleeping?", "sim")]
    page = client.get("/q/flag:brazilian/1").text  # the same row's page (brazilian: the bus, then this one)
    assert "Dialog context (VisDial)" in page and "dois gatos num sofá" in page
    assert '<li value="2" class="marked">' in page and "<img" not in page
    # an answer that is only an option of round 2 shows that dialog too, the option named in the marked round
    option = client.get(f"/api/row/{H['maybe']}").json()["dialogs"]
    assert [(d["image_id"], d["option"]["pt"], [(r["round"], r["marked"]) for r in d["rounds"]]) for d in option] == [
        ("visdial/7", "talvez", [(1, False), (2, True)])]
    every = client_of(make_app(root, RunTables(root, ["reference", "other"], SPLITS, "reference"), overlay,
                               queue_size=50))  # a sample of every string, so the row has a page
    assert "option offered in this round:</b> talvez" in every.get(f"/q/sample/{_pos(every, H['maybe'])}").text


def _pos(client, h: str) -> int:
    return client.get("/api/queue/sample").json()["hashes"].index(h)


def test_each_action_is_stored_with_provenance_and_counted(run) -> None:
    client, overlay, _ = run
    h = H["a red car"]
    r = client.post("/api/correct", json={"text_hash": h, "action": "edit", "text_pt": "um carro encarnado",
                                          "replaces": ""})
    assert r.status_code == 200 and r.json()["superseded"] is None
    rec = overlay.corrections("reference:v1")[h]
    assert (rec.text_pt, rec.replaces, rec.action, rec.who, rec.source_engine) == (
        "um carro encarnado", "a red car", "edit", "ana", None)
    # accept another engine's output: the server takes the text from that engine's table
    b = H["a bus on the street"]
    r = client.post("/api/correct", json={"text_hash": b, "action": "accept", "source_engine": "other",
                                          "replaces": ""})
    assert r.status_code == 200
    rec = overlay.corrections("reference:v1")[b]
    assert (rec.text_pt, rec.action, rec.source_engine, rec.replaces) == (
        "um autocarro na rua", "accept", "other:v1", "um ônibus na rua")
    # form-encoded works as well as JSON
    r = client.post("/api/verdict", data={"text_hash": b, "flag": "brazilian", "verdict": "confirmed"})
    assert r.status_code == 200
    client.post("/api/verdict", json={"text_hash": h, "flag": "untranslated", "verdict": "false_alarm"})
    assert overlay.verdicts("reference:v1") == {(b, "brazilian"): "confirmed", (h, "untranslated"): "false_alarm"}
    r = client.post("/api/gold", json={"text_hash": h})
    assert r.status_code == 200 and r.json()["style"] == "cc3m"
    g = overlay.gold()
    assert [(x.text_hash, x.text_pt, x.style, x.who, x.from_engine) for x in g] == [
        (h, "um carro encarnado", "cc3m", "ana", "reference:v1")]
    r = client.post("/api/gold", json={"text_hash": H["are they sleeping?"], "text_pt": "estão a dormir?"})
    assert r.json()["style"] == "visdial_q"
    # the machine tables are untouched; the row page shows the human text as current
    assert pl.read_parquet(run[2] / "translated/reference/cc3m/train.parquet")["text_pt"][1] == "a red car"
    row = client.get(f"/api/row/{h}").json()
    assert (row["current"], row["machine_text"], row["human"]["who"]) == ("um carro encarnado", "a red car", "ana")
    q = queues(client)
    assert (q["flag:untranslated"]["reviewed"], q["flag:brazilian"]["reviewed"], q["worst"]["reviewed"]) == (1, 2, 2)


def test_two_tabs_editing_one_row_both_kept_last_wins_and_logged(run, caplog) -> None:
    client, overlay, _ = run
    h = H["a dog runs on the beach"]
    shown = client.get(f"/api/row/{h}").json()["human_id"]  # both tabs opened the row: the machine text
    assert shown is None
    tab_a = client.post("/api/correct", json={"text_hash": h, "text_pt": "um cão corre pela praia", "replaces": ""})
    with caplog.at_level(logging.WARNING, logger="ptvl.review"):
        tab_b = client.post("/api/correct", json={"text_hash": h, "text_pt": "um cão a correr na praia",
                                                  "replaces": ""})
    assert tab_a.json()["superseded"] is None
    assert tab_b.status_code == 200
    assert tab_b.json()["superseded"] == {"id": tab_a.json()["id"], "text_pt": "um cão corre pela praia", "who": "ana"}
    assert "overrides an edit you had not seen" in tab_b.json()["message"]
    assert [r.text_pt for r in overlay.history("reference:v1", h)] == ["um cão corre pela praia",
                                                                      "um cão a correr na praia"]
    assert overlay.corrections("reference:v1")[h].text_pt == "um cão a correr na praia"
    assert any("supersedes" in r.getMessage() for r in caplog.records)
    # a third edit made on the page after reloading (replaces = the latest) supersedes nothing
    tab_c = client.post("/api/correct", json={"text_hash": h, "text_pt": "um cão na praia",
                                              "replaces": str(tab_b.json()["id"])})
    assert tab_c.json()["superseded"] is None


@pytest.mark.parametrize("url", [
    "/image/../../etc/passwd",
    "/image/%2e%2e/%2e%2e/etc/passwd",
    "/image/cc3m/train/..%2F..%2F..%2F..%2Foutside%2Fsecret.txt",
    "/image/cc3m/train/%2e%2e/%2e%2e/%2e%2e/%2e%2e/outside/secret.txt",
    "/image/cc3m/train/cc3m/train/2",  # its shard is a symlink to a file outside the root
    "/image/cc3m/train/cc3m/train/3",  # its recorded shards_dir climbs out of the root
    "/image/cc3m/..%2F..%2Foutside/secret.txt",
    "/image/visdial/val/visdial/7",  # known split, no images downloaded
    "/static/..%2Fapp.py",
    "/static/%2e%2e%2fapp.py",
])
def test_path_traversal_gets_a_4xx_and_no_bytes(run, url) -> None:
    client, _, _ = run
    r = client.get(url)
    assert 400 <= r.status_code < 500, (url, r.status_code)
    assert SECRET not in r.content and b"root:" not in r.content and b"import" not in r.content


def _count(overlay: HumanOverlay) -> int:
    return (len(overlay.history("reference:v1", H["a red car"])) + len(overlay.verdicts("reference:v1"))
            + len(overlay.gold()))


@pytest.mark.parametrize("path,kind,body,status,message", [
    ("/api/correct", "application/json", b'{"text_hash": "abc", ', 400, "malformed JSON"),
    ("/api/correct", "application/json", b"[1, 2]", 400, "must be an object"),
    ("/api/correct", "application/json", b'{"text_pt": "x", "replaces": ""}', 422, "missing field 'text_hash'"),
    ("/api/correct", "application/json", b'{"text_hash": "%(h)s", "text_pt": "x"}', 422, "missing field 'replaces'"),
    ("/api/correct", "application/json", b'{"text_hash": "%(h)s", "replaces": ""}', 422, "missing field 'text_pt'"),
    ("/api/correct", "application/json", b'{"text_hash": "0000", "text_pt": "x", "replaces": ""}', 404,
     "unknown text_hash"),
    ("/api/correct", "application/json", b'{"engine": "deepl", "text_hash": "%(h)s", "text_pt": "x", "replaces": ""}',
     404, "unknown engine 'deepl'"),
    ("/api/correct", "application/json", b'{"text_hash": "%(h)s", "text_pt": "%(long)s", "replaces": ""}', 422,
     f"at most {MAX_TEXT_CHARS:,}"),
    ("/api/correct", "application/json", b'{"text_hash": "%(h)s", "text_pt": "   ", "replaces": ""}', 422, "empty"),
    ("/api/correct", "application/json", b'{"text_hash": "%(h)s", "text_pt": 5, "replaces": ""}', 422,
     "must be strings"),
    ("/api/correct", "application/json", b'{"text_hash": "%(h)s", "action": "delete", "replaces": ""}', 422,
     "unknown action"),
    ("/api/correct", "application/json", b'{"text_hash": "%(h)s", "action": "accept", "source_engine": "x", '
     b'"replaces": ""}', 404, "unknown source_engine"),
    ("/api/correct", "text/plain", b"text_hash=%(h)s", 415, "application/json"),
    ("/api/correct", "", b"", 415, "application/json"),
    ("/api/correct", "application/json", b'{"text_hash": "\xff\xfe"}', 400, "not UTF-8"),
    ("/api/correct", "application/json", b'{"x": "%(huge)s"}', 413, "at most"),
    ("/api/verdict", "application/json", b'{"text_hash": "%(h)s", "flag": "untranslated", "verdict": "maybe"}', 422,
     "unknown verdict"),
    ("/api/verdict", "application/json", b'{"text_hash": "%(h)s", "flag": "brazilian", "verdict": "confirmed"}', 422,
     "no flag 'brazilian'"),
    ("/api/verdict", "application/x-www-form-urlencoded", b"text_hash=%(h)s&flag=untranslated", 422,
     "missing field 'verdict'"),
    ("/api/gold", "application/json", b'{"text_hash": "%(h)s", "text_pt": ""}', 422, "empty"),
])
def test_malformed_posts_get_a_4xx_with_a_message_and_store_nothing(run, path, kind, body, status, message) -> None:
    client, overlay, _ = run
    body = body.replace(b"%(h)s", H["a red car"].encode()).replace(b"%(long)s", b"x" * (MAX_TEXT_CHARS + 1)) \
        .replace(b"%(huge)s", b"x" * 70_000)
    r = client.post(path, content=body, headers={"content-type": kind} if kind else {})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert _count(overlay) == 0


def test_cross_site_posts_and_unknown_pages_are_refused(run) -> None:
    client, overlay, _ = run
    r = client.post("/api/correct", json={"text_hash": H["a red car"], "text_pt": "x", "replaces": ""},
                    headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.json()["error"]
    assert _count(overlay) == 0
    r = client.get("/q/flag:nope/0")
    assert r.status_code == 404 and "no row with flag" in r.text
    r = client.get("/q/worst/99")
    assert r.status_code == 404 and "past its end" in r.text
    assert client.get("/api/row/0000").status_code == 404


def test_cli_review_fails_clearly_without_translations_and_its_help_teaches(tmp_path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app
    from tests.operator_run import PROFILE

    config = tmp_path / "tiny.toml"
    config.write_text(PROFILE.format(root=tmp_path / "run"))
    res = CliRunner().invoke(app, ["review", "--config", str(config)])
    assert res.exit_code == 2
    assert "no translated tables for engine 'reference'" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["review", "--config", str(config), "--engine", "deepl"])
    assert res.exit_code == 2 and "no [engines.deepl] table" in " ".join(res.output.split())
    text = " ".join(CliRunner().invoke(app, ["review", "--help"], env={"COLUMNS": "200"}).output.split())
    for needle in ("127.0.0.1", "flag:<name>", "disagree", "j/k", "memory/human.sqlite", "--until shards"):
        assert needle in text, needle


def test_only_the_host_names_given_are_served(tmp_path) -> None:
    """DNS rebinding: a page on evil.example that re-points its name at 127.0.0.1 sends Host: evil.example."""
    root = build_root(tmp_path / "run")
    app = make_app(root, RunTables(root, ["reference"], SPLITS, "reference"),
                   HumanOverlay(root / "memory" / "human.sqlite"), hosts=["127.0.0.1", "localhost"])
    assert client_of(app, base_url="http://127.0.0.1:8765").get("/api/queues").status_code == 200
    r = client_of(app, base_url="http://evil.example:8765").post(
        "/api/correct", json={"text_hash": H["a red car"], "text_pt": "x", "replaces": ""})
    assert r.status_code == 403 and "Host 'evil.example' is not served" in r.json()["error"]
    assert client_of(app, base_url="http://evil.example:8765").get("/").status_code == 403


def test_qe_queue_lists_the_lowest_qe_strings_of_the_engine(tmp_path) -> None:
    import polars as pl

    from pipeline.review.queues import Queues

    root = build_root(tmp_path / "run")
    qe_path = root / "neural" / "reference" / "qe.parquet"
    qe_path.parent.mkdir(parents=True)
    strings = [r[3] for r in CC3M + VISDIAL]
    scores = [0.9 - 0.1 * i for i in range(len(strings))]  # the last strings score lowest
    pl.DataFrame({"text_hash": [text_hash(t) for t in strings] + ["not-in-this-run"],
                  "qe": scores + [-5.0]}).write_parquet(qe_path)
    queue = Queues(RunTables(root, ["reference", "other"], SPLITS, "reference"), size=3).get("qe")
    assert list(queue.hashes) == [text_hash(t) for t in strings[::-1][:3]]
    assert queue.note == f"the 3 lowest QE scores of {len(strings)} scored strings"
