"""Benchmark runners driven by a small deterministic model with known embeddings and losses."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eval.runners import (
    BenchmarkInputError,
    CaptionedImage,
    Dialog,
    DialogRound,
    EvalModel,
    VQAQuestion,
    dialog_text,
    run_captioning,
    run_retrieval,
    run_visdial,
    run_vqa,
    visdial_prefix,
)
from eval.settings import EvalSettings

E = torch.eye(4)


class TableModel:
    """Implements EvalModel from lookup tables; feats are the list of image ids. Records its calls."""

    def __init__(self, images: dict[str, torch.Tensor], texts: dict[str, torch.Tensor],
                 captions: dict[str, str] | None = None, answers: dict[str, str] | None = None) -> None:
        self.images, self.texts = images, texts
        self.captions, self.answers = captions or {}, answers or {}
        self.calls: dict[str, int] = {"image_embeddings": 0, "text_embeddings": 0}
        self.option_calls: list[tuple[list[str], list[str], list[list[str]]]] = []
        self.prompts: list[str] = []

    def image_embeddings(self, feats):
        self.calls["image_embeddings"] += 1
        return F.normalize(torch.stack([self.images[i] for i in feats]), dim=1)

    def text_embeddings(self, texts):
        self.calls["text_embeddings"] += 1
        return F.normalize(torch.stack([self.texts[t] for t in texts]), dim=1)  # KeyError on a wrong prompt

    def caption(self, feats, max_new_tokens, num_beams=1):
        return [self.captions[i] for i in feats]

    def option_losses(self, feats, prefix_texts, options, chunk=100, *, image=True, reduce="sum"):
        self.option_calls.append((list(feats), list(prefix_texts), [list(o) for o in options], image, reduce))
        # With the image the summed loss is the option's length in characters (the shortest option wins), its
        # mean the characters per word; without the image the longest option wins (100 - characters).
        def loss(o: str) -> float:
            chars = float(len(o)) if image else 100.0 - len(o)
            return chars if reduce == "sum" else chars / max(len(o.split()), 1)

        return torch.tensor([[loss(o) for o in opts] for opts in options])

    def answer(self, feats, prompt):
        self.prompts.append(prompt)
        return self.answers[feats[0]]


def features_for(ids: list[str]) -> list[str]:
    return list(ids)


def test_the_table_model_satisfies_the_protocol():
    assert isinstance(TableModel({}, {}), EvalModel)


def _retrieval_rows():
    rows = [CaptionedImage("a", ("a one", "a two")), CaptionedImage("b", ("b one", "b two")),
            CaptionedImage("c", ("c one", "c two"))]
    images = {"a": E[0], "b": E[1], "c": E[2]}
    # a's captions point at a; b's first caption points at c, its second mostly at b;
    # c's captions point at c, or between c and a (c closer).
    texts = {"a one": E[0], "a two": E[0] + 0.1 * E[3], "b one": E[2] + 0.2 * E[1], "b two": E[1] + 0.5 * E[0],
             "c one": E[2] + 0.5 * E[0], "c two": E[2]}
    return rows, images, texts


def test_run_retrieval_metrics_by_hand_and_index_cache(tmp_path):
    rows, images, texts = _retrieval_rows()
    model = TableModel(images, texts)
    res = run_retrieval(model, features_for, rows, cache_dir=tmp_path, model_key="ckpt-1",
                        settings=EvalSettings(image_batch_size=2, text_batch_size=4))
    m = res.metrics
    # t2i: "b one" ranks c first (rank 1); every other caption finds its image first.
    assert m["t2i_r1"] == pytest.approx(5 / 6) and m["t2i_r5"] == 1.0
    # i2t: a: "a one" first (cos 1); c: "c two" first (cos 1); b: "b two" (cos 0.894), no other text has
    # any b component except its own "b one" (0.196) -> every image hits at 1.
    assert m["i2t_r1"] == 1.0
    assert model.calls == {"image_embeddings": 2, "text_embeddings": 2}  # 3 images / 2, 6 texts / 4
    assert res.top_texts(1, k=2)[0] == ("b two", pytest.approx(1 / 1.25 ** 0.5), True)
    assert res.top_images(2, k=1)[0][0] == "c" and res.top_images(2, k=1)[0][2] is False
    assert (tmp_path / "images.npy").exists() and (tmp_path / "texts.ids.json").exists()

    # Same checkpoint, same texts: both indexes come from the cache, the model is not asked again.
    again = run_retrieval(model, features_for, rows, cache_dir=tmp_path, model_key="ckpt-1")
    assert again.metrics == m and model.calls == {"image_embeddings": 2, "text_embeddings": 2}
    # Another translation of the captions re-embeds the texts only; another checkpoint re-embeds both.
    texts2 = {**texts, "b um": texts["b one"]}
    rows2 = [rows[0], CaptionedImage("b", ("b um", "b two")), rows[2]]
    model2 = TableModel(images, texts2)
    run_retrieval(model2, features_for, rows2, cache_dir=tmp_path, model_key="ckpt-1")
    assert model2.calls == {"image_embeddings": 0, "text_embeddings": 1}
    run_retrieval(model2, features_for, rows2, cache_dir=tmp_path, model_key="ckpt-2")
    assert model2.calls == {"image_embeddings": 1, "text_embeddings": 2}


def test_run_retrieval_rejects_bad_rows():
    rows, images, texts = _retrieval_rows()
    with pytest.raises(BenchmarkInputError, match="duplicate image id 'a'"):
        run_retrieval(TableModel(images, texts), features_for, [rows[0], rows[0]])
    with pytest.raises(BenchmarkInputError, match="no caption"):
        run_retrieval(TableModel(images, texts), features_for, [CaptionedImage("a", ())])


def test_run_captioning_returns_captions_and_scores():
    rows = [CaptionedImage("x", ("um quadrado vermelho", "quadrado vermelho")),
            CaptionedImage("y", ("um círculo azul",))]
    model = TableModel({}, {}, captions={"x": "um quadrado vermelho [RET]", "y": "um triângulo verde"})
    res = run_captioning(model, features_for, rows, settings=EvalSettings(meteor_mode="none"))
    assert res.captions == {"x": "um quadrado vermelho", "y": "um triângulo verde"}
    # Unigrams: x 3/3, y 1/3 ("um") -> 4/6; lengths 3+3 = closest refs 3+3: no brevity penalty.
    assert res.metrics["bleu1"] == pytest.approx(4 / 6, rel=1e-6)
    assert res.metrics["rouge_l"] == pytest.approx((1.0 + (2.44 * 1 / 3 * 1 / 3) / (1 / 3 + 1.44 / 3)) / 2)
    assert "meteor_en" not in res.metrics


def _dialogs():
    r = [
        DialogRound("que cor tem?", "vermelho", ("vermelho", "azul claro", "verde-escuro", "sim"), 0),  # -> 2
        DialogRound("quantas?", "duas", ("três", "duas", "uma", "muitas mesmo"), 1),  # uma, três, duas -> 3
        DialogRound("é um desenho?", "não, é um desenho", ("sim", "não", "não, é um desenho", "talvez"), 2),  # -> 4
    ]
    d1 = Dialog("img1", "um quadrado vermelho", tuple(r), dense_round=2, dense_relevance=(0.0, 1.0, 0.5, 0.0))
    d2 = Dialog("img2", "um círculo", (DialogRound("é grande?", "sim", ("não", "sim", "talvez", "nunca"), 1),))
    return [d1, d2]


def test_visdial_prompt_formats():
    d1 = _dialogs()[0]
    assert visdial_prefix(d1.caption, d1.rounds[:1], "quantas?") == \
        "um quadrado vermelho Q: que cor tem? A: vermelho Q: quantas? A:"
    assert dialog_text(d1).startswith("um quadrado vermelho Q: que cor tem? A: vermelho Q: quantas? A: duas Q:")


def test_run_visdial_it2t_and_t2i_by_hand(tmp_path):
    d1, d2 = _dialogs()
    images = {"img1": E[0], "img2": E[1], "img3": E[2]}
    # T2I: d1's text is closest to img3 (rank 2 for img1), d2's text to img2 (rank 1).
    texts = {dialog_text(d1): E[2] + 0.5 * E[0], dialog_text(d2): E[1]}
    model = TableModel(images, texts)
    res = run_visdial(model, features_for, [d1, d2], image_ids=["img1", "img2", "img3"], cache_dir=tmp_path)
    # Every dialog is one option_losses call: its rounds' prefixes, the image repeated, options with a space.
    feats, prefixes, options, _, _ = model.option_calls[0]
    # Four passes per dialog: summed and mean loss with the image, and both without (the no-image baseline).
    assert [c[3:] for c in model.option_calls] == [(True, "sum"), (True, "mean"), (False, "sum"), (False, "mean")] * 2
    assert feats == ["img1"] * 3 and all(c[1] == prefixes and c[2] == options for c in model.option_calls[:4])
    assert prefixes[0] == "um quadrado vermelho Q: que cor tem? A:"
    assert prefixes[2].endswith("Q: quantas? A: duas Q: é um desenho? A:")
    assert options[0] == [" vermelho", " azul claro", " verde-escuro", " sim"]
    # gt ranks by option length (shortest first): d1 round 1 rank 2; round 2 'duas' ties 'três' (4
    # characters) behind 'uma': rank 2 or 3 (pessimistic 3); round 3 rank 4; d2: 'sim' ties 'não' (3
    # characters): rank 1 or 2 (pessimistic 2). Expected values average over the tie orders.
    m = res.metrics
    assert m["it2t_r1"] == pytest.approx(0.5 / 4) and m["it2t_r1_pess"] == 0.0
    assert m["it2t_mean_rank"] == pytest.approx((2 + 2.5 + 4 + 1.5) / 4)
    assert m["it2t_mean_rank_pess"] == pytest.approx((2 + 3 + 4 + 2) / 4)
    assert m["it2t_mrr"] == pytest.approx((1 / 2 + (1 / 2 + 1 / 3) / 2 + 1 / 4 + (1 + 1 / 2) / 2) / 4)
    assert m["it2t_mrr_pess"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 4 + 1 / 2) / 4)
    assert m["it2t_r5"] == 1.0 and m["it2t_tied_rounds"] == 2 and m["it2t_translation_collisions"] == 0
    # NDCG on d1's round 2: relevant options 'duas' (1.0) and 'uma' (0.5), so k = 2. Model order 'uma',
    # then 'três'/'duas' tied (mean relevance 0.5): expected DCG 0.5 / log2(2) + 0.5 / log2(3).
    assert m["it2t_ndcg"] == pytest.approx((0.5 + 0.5 / np.log2(3)) / (1.0 + 0.5 / np.log2(3)))
    assert m["t2i_r1"] == pytest.approx(0.5) and m["t2i_r5"] == 1.0
    assert res.chosen["img1"] == ["sim", "uma", "sim"]
    assert res.t2i_top["img1"][:2] == ["img3", "img1"]
    assert res.losses["img2"].shape == (1, 4)
    items = res.items()
    assert items["rounds"][:2] == [["img1", 1, 1, 0], ["img1", 2, 1, 1]] and items["candidates"] == ["img1", "img2", "img3"]
    assert set(items["dense_ndcg"]) == {"img1"} and items["dialogs"] == ["img1", "img2"]
    assert set(items["rankings"]) == {"mean", "no_image", "no_image_mean", "length"}
    assert items["rankings"]["length"]["rounds"][0] == ["img1", 1, 1, 0]  # 'vermelho' is longer than 'sim'


def test_run_visdial_mean_loss_ranking_and_the_two_baselines_by_hand():
    d1, d2 = _dialogs()
    model = TableModel({"img1": E[0], "img2": E[1]}, {dialog_text(d1): E[0], dialog_text(d2): E[1]})
    res = run_visdial(model, features_for, [d1, d2])
    m, base = res.metrics, res.baselines
    # Mean loss (characters per word, " " included): round 1 'vermelho' 9 is behind 'sim' 4 and 'azul claro'
    # 5.5 (rank 3); round 2 as summed (2.5); round 3 'não, é um desenho' 18/4 = 4.5 behind 'sim', 'não'
    # (rank 3); d2 'sim' ties 'não' (1.5).
    assert m["it2t_meanloss_mean_rank"] == pytest.approx((3 + 2.5 + 3 + 1.5) / 4)
    assert m["it2t_meanloss_r1"] == pytest.approx(0.5 / 4) and m["it2t_meanloss_r1_pess"] == 0.0
    assert "it2t_meanloss_n_rounds" not in m and m["it2t_n_rounds"] == 4  # counted once, under the headline
    # No image: the longest option wins. Ranks 3, 2.5 (ties 'três'), 1, 3.5 (behind 'talvez', 'nunca', tied).
    assert set(base) == {"no_image", "length"}
    assert base["no_image"]["it2t_mean_rank"] == pytest.approx(2.5) and base["no_image"]["it2t_r1"] == 0.25
    assert base["no_image"]["it2t_meanloss_mean_rank"] == pytest.approx(2.5)
    # Length alone (characters, shortest first): this model's summed loss IS the length, so its headline
    # figures are exactly the length baseline's (what the baseline row exposes). No T2I for a baseline.
    headline = {k: v for k, v in m.items() if k.startswith("it2t_") and not k.startswith(("it2t_meanloss_",
                                                                                        "it2t_translation"))}
    assert base["length"] == pytest.approx(headline) and base["length"]["it2t_mean_rank"] == 2.5
    assert not [k for k in base["length"] if k.startswith(("t2i_", "it2t_meanloss_"))]
    assert not [k for k in m if k.startswith("no_image")]  # a baseline never lands in the run's own metrics


def test_visdial_no_image_baseline_can_be_turned_off():
    d1, d2 = _dialogs()
    model = TableModel({"img1": E[0], "img2": E[1]}, {dialog_text(d1): E[0], dialog_text(d2): E[1]})
    settings = EvalSettings(visdial_no_image_baseline=False)
    res = run_visdial(model, features_for, [d1, d2], settings=settings)
    assert [c[3:] for c in model.option_calls] == [(True, "sum"), (True, "mean")] * 2
    assert set(res.baselines) == {"length"} and set(res.items()["rankings"]) == {"mean", "length"}
    assert "baseline_no_image" not in settings.visdial_labels()
    assert "summed answer-token loss" in settings.visdial_labels()["it2t_ranking"]


class PositionModel(TableModel):
    """Losses that depend on an option's POSITION as well as its text (as batched scoring can): length +
    0.001 x index."""

    def option_losses(self, feats, prefix_texts, options, chunk=100, *, image=True, reduce="sum"):
        return torch.tensor([[len(o) + 0.001 * i for i, o in enumerate(opts)] for opts in options])


def test_visdial_equal_pt_options_tie_whatever_their_position():
    # 'yes' and 'yeah' both became 'sim': gt 0 collides with option 2. The model's losses depend on
    # position, so without sharing one loss the gt would rank 1st here and 2nd with the options reversed.
    opts = ("sim", "talvez", "sim ", "não sei", "nunca mais")
    d = Dialog("img1", "um gato", (DialogRound("é um gato?", "sim", opts, 0),))
    moved = Dialog("img1", "um gato", (DialogRound("é um gato?", "sim", tuple(reversed(opts)), 4),))
    images, texts = {"img1": E[0]}, {dialog_text(d): E[0]}
    a = run_visdial(PositionModel(images, texts), features_for, [d])
    b = run_visdial(PositionModel(images, texts), features_for, [moved])
    assert a.metrics["it2t_translation_collisions"] == 1
    assert a.metrics["it2t_r1"] == pytest.approx(0.5) and a.metrics["it2t_r1_pess"] == 0.0
    assert a.metrics == pytest.approx(b.metrics)
    assert a.losses["img1"][0, 0] == a.losses["img1"][0, 2] == pytest.approx(4.001)  # " sim": 4 + 0.001 * 1


def test_retrieval_embeds_each_distinct_text_once_and_keys_references_by_source():
    # Two images share one PT caption (two EN captions translated alike): one embedding, an exact tie.
    rows = [CaptionedImage("a", ("um cão", "um cão a correr"), ("a dog", "a dog running")),
            CaptionedImage("b", ("um cão",), ("one dog",))]
    texts = {"um cão": E[0] + E[1], "um cão a correr": E[0]}
    model = TableModel({"a": E[0], "b": E[1]}, texts)
    res = run_retrieval(model, features_for, rows)
    assert res.text_keys == ["a\ta dog", "a\ta dog running", "b\tone dog"] and res.text_rows == [0, 1, 0]
    assert model.calls["text_embeddings"] == 1
    # Image b: its caption 'um cão' ties the identical caption of image a -> rank 1 or 2.
    assert res.metrics["i2t_r1"] == pytest.approx((1 + 0.5) / 2) and res.metrics["i2t_r1_pess"] == 0.5
    assert res.metrics["i2t_tied"] == 1


def test_run_visdial_rejects_a_gt_index_outside_the_options():
    d1, _ = _dialogs()
    bad = Dialog("img1", "x", (DialogRound("q", "a", ("a", "b"), 2),))
    with pytest.raises(BenchmarkInputError, match="round 1: gt_index 2 outside"):
        run_visdial(TableModel({}, {}), features_for, [bad])
    with pytest.raises(BenchmarkInputError, match="not among the candidates"):
        run_visdial(TableModel({"img1": E[0]}, {dialog_text(d1): E[0]}), features_for, [d1], image_ids=["zz"])


def test_run_vqa_prompts_and_scores():
    qs = [VQAQuestion("1", "i1", "Is it red?", ("yes",) * 10, "yes/no"),
          VQAQuestion("2", "i2", "How many?", ("2",) * 3 + ("3",) * 7, "number"),
          VQAQuestion("3", "i1", "What shape?", ("square",) * 10, "other")]
    model = TableModel({}, {}, answers={"i1": "yes it is [RET]", "i2": "two shapes"})
    res = run_vqa(model, features_for, qs, settings=EvalSettings(vqa_prompt="Pergunta: {question} Resposta:",
                                                                  vqa_mode="official"))  # English answers
    assert model.prompts[0] == "Pergunta: Is it red? Resposta:"
    assert res.metrics["yes/no"] == 1.0 and res.metrics["number"] == pytest.approx(0.9)
    assert res.metrics["other"] == 0.0 and res.metrics["overall"] == pytest.approx(1.9 / 3)
    assert res.mode == "official" and res.items()["questions"][1] == ["2", "number", pytest.approx(0.9)]


def test_run_vqa_mode_comes_from_the_settings():
    qs = [VQAQuestion("1", "i1", "É vermelho?", ("Sim",) * 10, "yes/no"),
          VQAQuestion("2", "i1", "Quantos?", ("dois",) * 10, "number")]
    model = TableModel({}, {}, answers={"i1": "sim"})
    pt = run_vqa(model, features_for, qs, settings=EvalSettings(vqa_mode="pt"))
    official = run_vqa(model, features_for, qs, settings=EvalSettings(vqa_mode="official"))
    assert pt.metrics["yes/no"] == 1.0 and official.metrics["yes/no"] == 0.0  # case: agreeing refs verbatim
    assert official.mode == "official" and pt.mode == "pt"
    with pytest.raises(ValueError, match="vqa_mode"):
        EvalSettings(vqa_mode="en")
