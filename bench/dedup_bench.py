"""Dedup and memory savings on a VisDial-like distribution: rows vs unique strings vs characters billed.

The distribution is synthetic but shaped like VisDial v1.0 train (123,287 dialogs x 10 rounds:
1,232,870 question and answer rows drawn from ~376k unique questions and ~337k unique answers,
"yes" and "no" very common, plus one caption per dialog), and a val split of 2,064 dialogs whose
lists (9k questions, 8k answers: assumed sizes) share half their strings with train. Every unique string occurs at least once;
the other rows are drawn Zipf-like by rank. The shares of "yes"/"no" (14% / 11% of answers here) are
assumptions, not measurements.

It runs the real `translate_missing` with a local engine that charges DeepL's way (source
characters) on a temporary memory, so the figures come from the same code path as a DeepL run:

    .venv/bin/python bench/dedup_bench.py            # full size (~2.6M rows; a minute or two)
    .venv/bin/python bench/dedup_bench.py --scale 0.1
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from translation.cost import estimate
from translation.engines.base import BaseEngine, Result
from translation.memory import TranslationMemory
from translation.runner import translate_missing

WORDS = (
    "man woman person people dog cat horse car bus train table chair plate pizza cake bed room kitchen "
    "street sign tree grass field beach water boat plane sky cloud window door wall picture phone laptop "
    "shirt hat glasses bag umbrella bike motorcycle truck ball frisbee kite skateboard surfboard snow "
    "white black red blue green yellow brown gray orange pink small large big little old young tall "
    "sitting standing holding wearing riding eating playing looking walking running lying parked "
    "on in near next to behind front top under with of the a an and some two three four many few "
    "left right inside outside background foreground day night sunny cloudy indoors outdoors"
).split()
HEAD_ANSWERS = ["yes", "no", "i can't tell", "not that i can see", "white", "2", "1", "nope", "yes it is",
                "no it isn't", "i don't know", "black", "3", "it's daytime", "outside"]
HEAD_QUESTIONS = ["is it sunny?", "what color is it?", "are there any people?", "is it daytime?",
                  "is the photo in color?", "how many people are there?", "is this indoors?",
                  "can you see the sky?", "are there other animals?", "what color is the dog?"]
PRICE = 20.0  # EUR per million characters, DeepL API Pro


class CharCountingEngine(BaseEngine):
    """A local stand-in for DeepL: translates nothing, bills like DeepL (source characters)."""

    engine_id = "bench:deepl-billing"

    def translate(self, texts: list[str], context: str | None = None) -> list[Result]:
        return [Result(text=t, score=None, billed_chars=len(t)) for t in texts]


def synth_unique(n: int, head: list[str], rng: np.random.Generator, words: tuple[int, int],
                 suffix: str = "", offset: int = 0) -> list[str]:
    """`n` distinct strings: the head phrases, then word sequences whose first three words encode
    the rank (so they are distinct by construction) followed by random filler words."""
    v = len(WORDS)
    out = list(head[:n])
    lengths = rng.integers(words[0], words[1] + 1, size=n)
    for i in range(len(out), n):
        code = [WORDS[((i + offset) // v**k) % v] for k in range(3)]
        filler = [WORDS[j] for j in rng.integers(0, v, size=max(int(lengths[i]) - 3, 0))]
        out.append(" ".join(code + filler) + suffix)
    return out


def draw_rows(unique: list[str], n_rows: int, rng: np.random.Generator, zipf_s: float,
              head_shares: dict[int, float]) -> list[str]:
    """`n_rows` strings: every unique string once, fixed shares for the head ranks, the rest Zipf(s)."""
    n_u = len(unique)
    if n_u + sum(int(s * n_rows) for s in head_shares.values()) > n_rows:
        raise ValueError(f"{n_u:,} unique strings and the head shares do not fit in {n_rows:,} rows")
    idx = [np.arange(n_u)]
    left = n_rows - n_u
    for rank, share in head_shares.items():
        k = int(share * n_rows)
        idx.append(np.full(k, rank))
        left -= k
    weights = 1.0 / np.arange(1, n_u + 1) ** zipf_s
    for rank in head_shares:
        weights[rank] = 0.0
    idx.append(rng.choice(n_u, size=left, p=weights / weights.sum()))
    order = np.concatenate(idx)
    rng.shuffle(order)
    return [unique[i] for i in order]


def visdial_like(n_dialogs: int, n_q: int, n_a: int, rng: np.random.Generator,
                 train: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Rows per field. Given `train`'s unique lists, half of each list is train's most frequent strings
    and the rest new strings (ranks past train's, so distinct from them)."""
    rounds = 10 * n_dialogs
    if train is None:
        questions = synth_unique(n_q, HEAD_QUESTIONS, rng, (3, 7), "?")
        answers = synth_unique(n_a, HEAD_ANSWERS, rng, (1, 5))
        captions = synth_unique(n_dialogs, [], rng, (8, 12))
    else:
        tq, ta, tc = train["question"], train["answer"], train["caption"]
        questions = tq[: n_q // 2] + synth_unique(n_q - n_q // 2, [], rng, (3, 7), "?", offset=len(tq))
        answers = ta[: n_a // 2] + synth_unique(n_a - n_a // 2, [], rng, (1, 5), offset=len(ta))
        captions = synth_unique(n_dialogs, [], rng, (8, 12), offset=len(tc))
    return {
        "caption": captions,
        "question": draw_rows(questions, rounds, rng, 1.05, {}),
        "answer": draw_rows(answers, rounds, rng, 1.0, {0: 0.14, 1: 0.11}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of VisDial v1.0 train size")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    n_dialogs, n_q, n_a = (max(int(x * args.scale), 20) for x in (123_287, 376_082, 337_527))

    t0 = time.perf_counter()
    train = visdial_like(n_dialogs, n_q, n_a, rng)
    q_u = [s for s, _ in Counter(train["question"]).most_common()]
    a_u = [s for s, _ in Counter(train["answer"]).most_common()]
    val = visdial_like(max(int(2_064 * args.scale), 10), max(int(9_000 * args.scale), 10),
                       max(int(8_000 * args.scale), 10), rng,
                       train={"question": q_u, "answer": a_u, "caption": train["caption"]})
    gen_s = time.perf_counter() - t0

    engine = CharCountingEngine()
    table: list[tuple[str, int, int, int]] = []  # (what, rows, strings sent, chars billed)
    with tempfile.TemporaryDirectory() as tmp:
        mem = TranslationMemory(Path(tmp) / "memory.sqlite")
        all_train = train["caption"] + train["question"] + train["answer"]
        for field, rows in train.items():
            table.append((f"train {field}s, one request per row", len(rows), len(rows), sum(map(len, rows))))
        table.append(("train, one request per row (no dedup)", len(all_train), len(all_train),
                      sum(map(len, all_train))))
        dry = estimate(all_train, mem, engine.engine_id, PRICE)
        t1 = time.perf_counter()
        first = translate_missing(all_train, engine, mem, batch_size=5000)
        run_s = time.perf_counter() - t1
        assert (first.sent, first.billed_chars) == (dry.unique_missing, dry.chars)
        table.append(("train, dedup + memory (first run)", first.rows, first.sent, first.billed_chars))
        again = translate_missing(all_train, engine, mem, batch_size=5000)
        table.append(("train, rerun (memory hits)", again.rows, again.sent, again.billed_chars))
        all_val = val["caption"] + val["question"] + val["answer"]
        table.append(("val, dedup only (fresh memory)", len(all_val), len(dict.fromkeys(all_val)),
                      sum(map(len, dict.fromkeys(all_val)))))
        v = translate_missing(all_val, engine, mem, batch_size=5000)
        table.append(("val, dedup + train's memory", v.rows, v.sent, v.billed_chars))
        # The alternative context policy: each answer keyed by its dialog's caption.
        caps = np.repeat(np.arange(n_dialogs), 10)
        ctx_pairs = {(a, int(c)) for a, c in zip(train["answer"], caps, strict=True)}
        table.append(("train answers, keyed by caption context", len(train["answer"]), len(ctx_pairs),
                      sum(len(a) for a, _ in ctx_pairs)))
        mem.close()

    w = max(len(r[0]) for r in table)
    print(f"VisDial-like, scale {args.scale}: {n_dialogs:,} dialogs, {len(q_u):,} unique questions, "
          f"{len(a_u):,} unique answers; yes {train['answer'].count('yes'):,} rows, "
          f"no {train['answer'].count('no'):,} rows")
    print(f"{'':{w}}  {'rows':>10}  {'strings sent':>12}  {'chars billed':>13}  {'EUR @20/M':>9}")
    for what, rows, sent, chars in table:
        print(f"{what:{w}}  {rows:>10,}  {sent:>12,}  {chars:>13,}  {chars * PRICE / 1e6:>9,.2f}")
    naive = table[3][3]
    print(f"dedup + memory bill {first.billed_chars / naive:.1%} of the per-row characters "
          f"({naive / max(first.billed_chars, 1):.2f}x fewer); "
          f"generation {gen_s:.1f}s, translate_missing over {first.rows:,} rows {run_s:.1f}s "
          f"({first.requests} stored batches)")


if __name__ == "__main__":
    main()
