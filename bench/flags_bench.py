"""Benchmark: quality flags (`translation.quality.flag_table`) on 3,318,333 synthetic CC3M-like rows.

Issue #11 goal: <= 120 s per engine on a 2-core machine.  The rows are built from CC3M-style slots (subject,
action, place, time, sometimes a number) with a PT-PT rendering of each slot, so the PT side is real
Portuguese; about 3% of rows repeat an earlier caption, and realistic failure rates are injected: English
copies, PT-BR wording, cuts, decoder loops, empty outputs and numbers written as words.  Each row has an
engine score (mean log-probability) that is a function of the output, as a translation memory gives.

    python bench/flags_bench.py                 # full size, prints rows/s and peak RSS
    python bench/flags_bench.py --rows 200000 --reference   # also time the per-row reference
"""
from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import polars as pl

from translation.quality import FLAG_NAMES, flag_table, flag_table_reference

CC3M_TRAIN_ROWS = 3_318_333

# (EN, PT-PT, PT-BR) per slot; the PT-BR column is what an engine in the wrong variety writes.
SUBJECTS = [
    ("a man", "um homem", "um homem"), ("a woman", "uma mulher", "uma mulher"), ("a young girl", "uma rapariga",
    "uma garota"), ("a little boy", "um menino", "um garoto"), ("an actor", "um ator", "um ator"),
    ("a dog", "um cão", "um cachorro"), ("two dogs", "dois cães", "dois cachorros"), ("a cat", "um gato", "um gato"),
    ("people", "pessoas", "pessoas"), ("a football player", "um jogador de futebol", "um jogador de futebol"),
    ("the team", "a equipa", "o time"), ("a family", "uma família", "uma família"), ("tourists", "turistas",
    "turistas"), ("a couple", "um casal", "um casal"), ("children", "crianças", "crianças"),
    ("a businessman", "um empresário", "um empresário"), ("a student", "um estudante", "um estudante"),
    ("an old woman", "uma senhora idosa", "uma senhora idosa"), ("a chef", "um cozinheiro", "um cozinheiro"),
    ("a horse", "um cavalo", "um cavalo"), ("a bird", "um pássaro", "um pássaro"), ("a musician", "um músico",
    "um músico"), ("a surfer", "um surfista", "um surfista"), ("a cyclist", "um ciclista", "um ciclista"),
]
ACTIONS = [
    ("riding a bike", "a andar de bicicleta", "andando de bicicleta"), ("waiting for the bus",
    "à espera do autocarro", "esperando o ônibus"), ("talking on a mobile phone", "a falar ao telemóvel",
    "falando no celular"), ("eating ice cream", "a comer um gelado", "tomando sorvete"), ("playing in the snow",
    "a brincar na neve", "brincando na neve"), ("drinking orange juice", "a beber sumo de laranja",
    "bebendo suco de laranja"), ("walking", "a caminhar", "caminhando"), ("having breakfast",
    "a tomar o pequeno-almoço", "tomando café da manhã"), ("reading a book", "a ler um livro", "lendo um livro"),
    ("looking at the camera", "a olhar para a câmara", "olhando para a câmera"), ("sitting on a bench",
    "sentado num banco", "sentado em um banco"), ("celebrating a goal", "a celebrar um golo",
    "comemorando um gol"), ("taking a photo", "a tirar uma fotografia", "tirando uma foto"),
    ("running", "a correr", "correndo"), ("sleeping", "a dormir", "dormindo"), ("cooking dinner",
    "a cozinhar o jantar", "cozinhando o jantar"), ("playing the guitar", "a tocar guitarra", "tocando violão"),
    ("attends the premiere of the film", "assiste à estreia do filme", "comparece à estreia do filme"),
    ("poses for a photo", "posa para uma fotografia", "posa para uma foto"), ("smiling", "a sorrir", "sorrindo"),
]
PLACES = [
    ("on the beach", "na praia"), ("in the park", "no parque"), ("on a busy street", "numa rua movimentada"),
    ("in the kitchen", "na cozinha"), ("at the train station", "na estação de comboios"), ("in the city",
    "na cidade"), ("in front of a building", "em frente a um edifício"), ("near the river", "perto do rio"),
    ("in a field of flowers", "num campo de flores"), ("on the grass", "na relva"), ("at the stadium",
    "no estádio"), ("in the mountains", "nas montanhas"), ("in a modern office", "num escritório moderno"),
    ("by the sea", "junto ao mar"), ("in the garden", "no jardim"), ("at a festival", "num festival"),
    ("in the snow", "na neve"), ("in the old town", "na cidade velha"), ("on a boat", "num barco"),
    ("at the airport", "no aeroporto"),
]
TIMES = [
    ("", ""), ("", ""), ("", ""), ("at sunset", "ao pôr do sol"), ("at night", "à noite"), ("in the morning",
    "de manhã"), ("on a sunny day", "num dia de sol"), ("in the rain", "à chuva"), ("during the summer",
    "durante o verão"), ("in winter", "no inverno"), ("after the match", "depois do jogo"),
]
DETAILS = [("wearing a {c} hat", "com um chapéu {c}"), ("with a {c} umbrella", "com um guarda-chuva {c}"),
           ("next to a {c} car", "ao lado de um carro {c}"), ("in a {c} dress", "com um vestido {c}"),
           ("holding a {c} bag", "com uma mala {c}"), ("with a {c} balloon", "com um balão {c}"),
           ("near a {c} door", "perto de uma porta {c}"), ("under a {c} sky", "sob um céu {c}"),
           ("on a {c} bicycle", "numa bicicleta {c}"), ("with a {c} scarf", "com um cachecol {c}"),
           ("", ""), ("", ""), ("", "")]
COLOURS = [("red", "vermelho"), ("blue", "azul"), ("green", "verde"), ("yellow", "amarelo"), ("black", "preto"),
           ("white", "branco"), ("pink", "cor-de-rosa"), ("grey", "cinzento"), ("brown", "castanho"),
           ("orange", "cor de laranja"), ("purple", "roxo"), ("golden", "dourado")]
DETAILS = [(e.format(c=ce), p.format(c=cp)) for e, p in DETAILS for ce, cp in COLOURS]
MOODS = [("", "")] * 6 + [
    ("looking happy", "com ar feliz"), ("looking tired", "com ar cansado"), ("with friends", "com amigos"),
    ("alone", "sozinho"), ("together", "juntos"), ("in silence", "em silêncio"), ("for the first time",
    "pela primeira vez"), ("again", "outra vez"), ("before the storm", "antes da tempestade"),
    ("after work", "depois do trabalho"), ("on holiday", "de férias"), ("in the background", "ao fundo"),
    ("in the foreground", "em primeiro plano"), ("from above", "visto de cima"), ("up close", "de perto"),
    ("in black and white", "a preto e branco"), ("in slow motion", "em câmara lenta"),
    ("during the festival", "durante o festival"), ("on the weekend", "ao fim de semana"),
    ("with a smile", "com um sorriso"), ("in the distance", "ao longe"), ("on a cloudy day", "num dia nublado"),
    ("near the window", "perto da janela"), ("under the trees", "debaixo das árvores"),
]
NUMBERS = [("with 3 friends", "com 3 amigos", "com três amigos"), ("in 1995", "em 1995", "em 1995"),
           ("at 10:30", "às 10h30", "às 10h30"), ("with 2 children", "com 2 filhos", "com dois filhos"),
           ("for 1,000 people", "para 1000 pessoas", "para mil pessoas")]


def synthetic_rows(rows: int, seed: int = 0, repeat_rate: float = 0.03) -> pl.DataFrame:
    """`rows` CC3M-like (segment_id, text_en, text_pt, score) rows with injected failure modes."""
    rng = np.random.default_rng(seed)
    fresh = rows - int(rows * repeat_rate)

    def pick(table: list[tuple], col: int, idx: np.ndarray) -> pl.Series:
        return pl.Series([t[col] for t in table]).gather(idx)

    s, a, p, t = (rng.integers(0, len(x), fresh) for x in (SUBJECTS, ACTIONS, PLACES, TIMES))
    n = rng.integers(0, len(NUMBERS), fresh)
    # a detail with its colour and a mood keep captions distinct (~3% repeats overall, as in CC3M)
    d = rng.integers(0, len(DETAILS), fresh)
    mo = rng.integers(0, len(MOODS), fresh)
    has_num = rng.random(fresh) < 0.06
    kind = rng.random(fresh)  # failure mode draw
    br = kind < 0.05
    num_word = pl.Series(has_num & (rng.random(fresh) < 0.5))
    df = pl.DataFrame({
        "s_en": pick(SUBJECTS, 0, s), "s_pt": pick(SUBJECTS, 1, s), "s_br": pick(SUBJECTS, 2, s),
        "a_en": pick(ACTIONS, 0, a), "a_pt": pick(ACTIONS, 1, a), "a_br": pick(ACTIONS, 2, a),
        "p_en": pick(PLACES, 0, p), "p_pt": pick(PLACES, 1, p), "t_en": pick(TIMES, 0, t), "t_pt": pick(TIMES, 1, t),
        "n_en": pick(NUMBERS, 0, n), "n_pt": pick(NUMBERS, 1, n), "n_word": pick(NUMBERS, 2, n),
        "has_num": has_num, "num_word": num_word, "br": br, "kind": kind,
        "d_en": pick(DETAILS, 0, d), "d_pt": pick(DETAILS, 1, d),
        "m_en": pick(MOODS, 0, mo), "m_pt": pick(MOODS, 1, mo),
    })
    sp = pl.lit(" ")
    num_en = pl.when(pl.col("has_num")).then(sp + pl.col("n_en")).otherwise(pl.lit(""))
    num_pt = (pl.when(pl.col("has_num") & pl.col("num_word")).then(sp + pl.col("n_word"))
              .when(pl.col("has_num")).then(sp + pl.col("n_pt")).otherwise(pl.lit("")))
    t_en = pl.when(pl.col("t_en") == "").then(pl.lit("")).otherwise(sp + pl.col("t_en"))
    t_pt = pl.when(pl.col("t_pt") == "").then(pl.lit("")).otherwise(sp + pl.col("t_pt"))
    t_en = t_en + pl.when(pl.col("m_en") == "").then(pl.lit("")).otherwise(sp + pl.col("m_en"))
    t_pt = t_pt + pl.when(pl.col("m_pt") == "").then(pl.lit("")).otherwise(sp + pl.col("m_pt"))
    street = pl.when(pl.col("d_en") == "").then(pl.lit("")).otherwise(sp + pl.col("d_en"))
    street_pt = pl.when(pl.col("d_pt") == "").then(pl.lit("")).otherwise(sp + pl.col("d_pt"))
    en = pl.col("s_en") + street + sp + pl.col("a_en") + sp + pl.col("p_en") + num_en + t_en
    subj = pl.when(pl.col("br")).then(pl.col("s_br")).otherwise(pl.col("s_pt"))
    act = pl.when(pl.col("br")).then(pl.col("a_br")).otherwise(pl.col("a_pt"))
    pt = subj + street_pt + sp + act + sp + pl.col("p_pt") + num_pt + t_pt
    k = pl.col("kind")
    pt = (pl.when((k >= 0.05) & (k < 0.06)).then(en)  # English copy
          .when((k >= 0.06) & (k < 0.07)).then(pl.col("s_pt") + sp + pl.col("a_pt") + pl.lit(" na"))  # cut
          .when((k >= 0.07) & (k < 0.075)).then(pl.col("s_pt") + (sp + pl.col("p_pt")).repeat_by(4).list.join(""))
          .when((k >= 0.075) & (k < 0.077)).then(pl.lit(""))
          .otherwise(pt))
    out = df.select(text_en=en, text_pt=pt)
    if rows > fresh:
        out = pl.concat([out, out.sample(rows - fresh, with_replacement=True, seed=seed)])
    out = out.sample(fraction=1.0, shuffle=True, seed=seed + 1)
    # The engine's score is a function of the text (a memory stores one per translation), so a repeated
    # caption repeats its score; about 1% fall below the default low_score threshold.
    u = (pl.col("text_pt").hash(seed) % 100_000).cast(pl.Float64) / 100_000
    score = (-0.3 - 0.9 * u - pl.when(u > 0.99).then(1.0).otherwise(0.0)).cast(pl.Float32)
    return out.with_columns(segment_id=pl.format("cc3m/train/{}", pl.int_range(rows)), score=score)


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=CC3M_TRAIN_ROWS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", action="store_true", help="also time the per-row reference path")
    ap.add_argument("--profile", action="store_true", help="print the time of each stage of flag_table")
    args = ap.parse_args()

    t0 = time.perf_counter()
    df = synthetic_rows(args.rows, args.seed)
    print(f"generated {df.height:,} rows ({df.select('text_en', 'text_pt', 'score').n_unique():,} unique) "
          f"in {time.perf_counter() - t0:.1f} s; peak RSS so far {_peak_rss_gb():.2f} GB")
    timings: dict[str, float] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    k0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = flag_table(df, timings=timings)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    k1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (k1.ru_utime + k1.ru_stime) - (k0.ru_utime + k0.ru_stime)
    rates = out.select(pl.col("flags").list.contains(f).mean().alias(f) for f in FLAG_NAMES)
    print("flag rates:", {k: round(v, 4) for k, v in rates.row(0, named=True).items()})
    print(f"flag_table: {args.rows:,} rows in {wall:.1f} s ({args.rows / wall:,.0f} rows/s); CPU {cpu:.1f} s in the "
          f"main process (all polars threads) + {child_cpu:.1f} s in detector workers = {cpu + child_cpu:.1f} CPU-s "
          f"(load average now {os.getloadavg()[0]:.1f}); peak RSS {_peak_rss_gb():.2f} GB; goal <= 120 s per "
          "engine on 2 cores")
    if args.profile or timings:
        print("stages:", ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    if args.reference:
        t0, c0 = time.perf_counter(), time.process_time()
        ref = flag_table_reference(df)
        rwall, rcpu = time.perf_counter() - t0, time.process_time() - c0
        same = ref["flag_reasons"].to_list() == out["flag_reasons"].to_list()
        print(f"per-row reference: {rwall:.1f} s ({args.rows / rwall:,.0f} rows/s), {rcpu:.1f} CPU-s (one core); "
              f"identical results: {same}")


if __name__ == "__main__":
    main()
