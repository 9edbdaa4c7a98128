"""Captioning metrics: pycocoevalcap's scorers checked against values computed independently here.

The English METEOR jar needs up to a minute to load its paraphrase table on a busy machine, so one
English scorer is started per module and shared.
"""
from __future__ import annotations

import math
import sys
import time
from collections import Counter

import pytest

from eval.metrics.caption import (
    TOKENIZATION_NOTE,
    CaptionInputError,
    MeteorError,
    MeteorScorer,
    MeteorTimeout,
    caption_scores,
    java_available,
    ptb_tokenize,
)

pytestmark = pytest.mark.skipif(not java_available(), reason="PTBTokenizer and METEOR need Java")


@pytest.fixture(scope="module")
def meteors():
    with MeteorScorer("en") as en, MeteorScorer("pt") as pt:
        yield {"en": en, "pt": pt}


def test_ptb_tokenizer_keeps_portuguese_accents_and_hyphens():
    gts, res = ptb_tokenize({"a": ["Um cão-polícia à porta."]}, {"a": "UM CÃO-POLÍCIA À PORTA!"})
    assert gts["a"] == ["um cão-polícia à porta"]
    assert res["a"] == ["um cão-polícia à porta"]
    # Brackets survive as -lrb-/-rrb- (documented quirk); a line break must not shift other captions.
    gts, res = ptb_tokenize({"x": ["(Lisboa)\nao sol", "pão"], "y": ["maçã"]}, {"x": "a\u2028b", "y": "Maçã."})
    assert gts == {"x": ["-lrb- lisboa -rrb- ao sol", "pão"], "y": ["maçã"]}
    assert res == {"x": ["a b"], "y": ["maçã"]}
    assert "-lrb-" in TOKENIZATION_NOTE and "lowercases" in TOKENIZATION_NOTE


def test_bleu_closed_form_with_closest_length_tie_and_brevity_penalty():
    refs = {
        "1": ["a dog runs", "the dog runs very fast"],  # lengths 3 and 5
        "2": ["a dog runs", "the dog runs very fast"],
    }
    hyps = {"1": "a dog runs fast", "2": "dog"}  # 4 words: a tie between 3 and 5, the shorter must win
    s = caption_scores(refs, hyps, meteor_mode="none")
    # Clipped n-gram matches / candidates, summed over the corpus:
    #   image 1: 1-grams 4/4, 2-grams 2/3 ("a dog", "dog runs"), 3-grams 1/2 ("a dog runs"), 4-grams 0/1
    #   image 2: 1-grams 1/1
    p1, p2, p3 = 5 / 5, 2 / 3, 1 / 2
    # Effective reference length: 3 (tie 3 vs 5 -> shorter) + 3 (closest to 1) = 6; candidates 5.
    bp = math.exp(1 - 6 / 5)
    assert s["bleu1"] == pytest.approx(bp * p1, rel=1e-6)
    assert s["bleu2"] == pytest.approx(bp * (p1 * p2) ** 0.5, rel=1e-6)
    assert s["bleu3"] == pytest.approx(bp * (p1 * p2 * p3) ** (1 / 3), rel=1e-6)
    assert s["bleu4"] < 1e-3  # no 4-gram match (pycocoevalcap's 1e-15 smoothing leaves ~1e-4)
    # Had the longer reference won the tie, the penalty would be exp(1 - 8/5) instead.
    assert s["bleu1"] != pytest.approx(math.exp(1 - 8 / 5), rel=1e-3)


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _cider_d(refs: dict[str, list[str]], hyps: dict[str, str], sigma: float = 6.0) -> float:
    """CIDEr-D (Vedantam et al. 2015) as coco-caption computes it: raw n-gram counts x idf, idf from the
    references' document frequency over images, clipped numerator, Gaussian length penalty, x10."""
    n_img = len(refs)
    df: Counter = Counter()
    for caps in refs.values():
        df.update({g for c in caps for n in range(1, 5) for g in _ngrams(c.split(), n)})

    def vec(words: list[str], n: int) -> dict:
        return {g: c * (math.log(n_img) - math.log(max(1.0, df[g]))) for g, c in _ngrams(words, n).items()}

    scores = []
    for key, caps in refs.items():
        h = hyps[key].split()
        total = 0.0
        for ref in caps:
            r = ref.split()
            penalty = math.exp(-((len(h) - len(r)) ** 2) / (2 * sigma**2))
            per_n = []
            for n in range(1, 5):
                vh, vr = vec(h, n), vec(r, n)
                num = sum(min(w, vr.get(g, 0.0)) * vr.get(g, 0.0) for g, w in vh.items())
                norm = math.sqrt(sum(w * w for w in vh.values())) * math.sqrt(sum(w * w for w in vr.values()))
                per_n.append(num / norm * penalty if norm else 0.0)
            total += sum(per_n) / 4
        scores.append(10 * total / len(caps))
    return sum(scores) / len(scores)


def test_cider_d_matches_an_independent_implementation():
    refs = {
        "a": ["um gato preto no sofá", "um gato dorme no sofá"],
        "b": ["um cão castanho na praia", "dois cães correm na praia"],
        "c": ["uma bicicleta vermelha na rua"],
    }
    hyps = {"a": "um gato preto dorme no sofá", "b": "um cão na praia", "c": "um gato na rua"}
    expected = _cider_d(refs, hyps)
    assert expected > 0.5
    assert caption_scores(refs, hyps, meteor_mode="none")["cider_d"] == pytest.approx(expected, rel=1e-9)


def test_perfect_single_reference_and_empty_hypothesis(meteors):
    refs = {"ok": ["um quadrado vermelho"], "empty": ["um círculo azul"]}
    perfect = caption_scores({"ok": refs["ok"]}, {"ok": "Um quadrado vermelho."}, meteor_mode="both",
                             meteor_scorers=meteors)
    assert perfect["bleu1"] == pytest.approx(1.0) and perfect["bleu3"] == pytest.approx(1.0)
    assert perfect["rouge_l"] == pytest.approx(1.0)
    assert perfect["meteor_en"] > 0.9 and perfect["meteor_pt"] > 0.9
    empty = caption_scores({"empty": refs["empty"]}, {"empty": ""}, meteor_mode="both", meteor_scorers=meteors)
    assert empty["bleu1"] < 1e-6 and empty["rouge_l"] == 0.0 and empty["cider_d"] == 0.0
    assert empty["meteor_en"] == 0.0 and empty["meteor_pt"] == 0.0
    both = caption_scores(refs, {"ok": "um quadrado vermelho", "empty": ""}, meteor_mode="both",
                          meteor_scorers=meteors)
    assert both["rouge_l"] == pytest.approx(0.5)  # mean of per-image 1.0 and 0.0


def test_meteor_modes_are_labelled_bounded_and_differ(meteors):
    refs = {1: ["o cão preto está à porta de casa"], 2: ["duas formas vermelhas sobre fundo azul"]}
    hyps = {1: "um cão preto à porta", 2: "formas vermelhas num fundo azul"}
    s = caption_scores(refs, hyps, meteor_mode="both", meteor_scorers=meteors)
    assert {"meteor_en", "meteor_pt"} <= set(s)
    assert 0.0 < s["meteor_en"] < 1.0 and 0.0 < s["meteor_pt"] < 1.0
    assert s["meteor_en"] != pytest.approx(s["meteor_pt"], abs=1e-4)
    only_pt = caption_scores(refs, hyps, meteor_mode="pt", meteor_scorers=meteors)
    assert "meteor_en" not in only_pt and only_pt["meteor_pt"] == pytest.approx(s["meteor_pt"])
    # Raw (untokenized) text: -norm splits "preto." into "preto ." (exact match), -lower does not,
    # and both lowercase ("CÃO" matches "cão").
    en, _ = meteors["en"].compute_score({1: ["o cão preto"]}, {1: ["o CÃO preto."]})
    pt, _ = meteors["pt"].compute_score({1: ["o cão preto"]}, {1: ["o CÃO preto."]})
    pt_clean, _ = meteors["pt"].compute_score({1: ["o cão preto"]}, {1: ["o CÃO preto"]})
    assert pt < pt_clean
    assert pt_clean > 0.9
    assert en != pytest.approx(pt, abs=1e-4)


def test_meteor_read_times_out_when_the_jar_hangs():
    hang = [sys.executable, "-c", "import time; time.sleep(600)"]
    scorer = MeteorScorer("en", timeout_s=1.0, command=hang)
    start = time.monotonic()
    with pytest.raises(MeteorTimeout, match="no answer within 1 s"):
        scorer.compute_score({1: ["a b"]}, {1: ["a b"]})
    assert time.monotonic() - start < 30
    scorer._proc.wait(timeout=30)  # killed, not left behind
    assert scorer._proc.returncode is not None
    scorer.close()


def test_meteor_reports_a_jar_that_dies():
    die = [sys.executable, "-c", "import sys; sys.stderr.write('No normalizer for language\\n'); sys.exit(3)"]
    with MeteorScorer("pt", timeout_s=30.0, command=die) as scorer, \
            pytest.raises(MeteorError, match=r"exit code 3.*No normalizer"):
        scorer.compute_score({1: ["a b"]}, {1: ["a b"]})


def test_bad_input_is_rejected_before_any_java_runs():
    with pytest.raises(CaptionInputError, match="missing for 1"):
        caption_scores({1: ["a"], 2: ["b"]}, {1: "a"})
    with pytest.raises(CaptionInputError, match="non-empty list"):
        caption_scores({1: []}, {1: "a"})
    with pytest.raises(CaptionInputError, match="non-empty list"):
        caption_scores({1: "a cat"}, {1: "a"})
    with pytest.raises(ValueError, match="meteor_mode"):
        caption_scores({1: ["a"]}, {1: "a"}, meteor_mode="fr")  # type: ignore[arg-type]
