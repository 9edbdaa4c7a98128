"""Builders of tiny, offline Hugging Face translation models (mBART-50-like and MADLAD/T5-like) for tests.

Each builder trains a small sentencepiece model on the synthetic sample's parallel EN/PT captions,
wraps it in the real transformers tokenizer class of the model family (MBart50Tokenizer, T5Tokenizer),
builds the model from a config with random weights and saves both with `save_pretrained`, so the
folder loads through exactly the code path a downloaded `Narrativa/...` or `google/madlad400-...`
folder does. Reusable by any test that needs a seq2seq model (translation, token stats, benchmarks).
"""
from __future__ import annotations

import io
import random
from pathlib import Path

import sentencepiece as spm

from pipeline.sample.scenes import captions, sample_scene

MADLAD_LANG_TOKENS = ["<2pt>", "<2en>"]


def caption_corpus(n_scenes: int = 200, seed: int = 0) -> list[str]:
    """English and Portuguese captions of `n_scenes` synthetic scenes, interleaved (a tokenizer corpus)."""
    rng = random.Random(seed)
    lines: list[str] = []
    for _ in range(n_scenes):
        for en, pt in captions(sample_scene(rng)):
            lines += [en, pt]
    return lines


def train_sentencepiece(
    lines: list[str], vocab_size: int, *, pad_id: int, unk_id: int, bos_id: int, eos_id: int,
    user_defined_symbols: list[str] | None = None,
) -> spm.SentencePieceProcessor:
    """Train a unigram sentencepiece model in memory (ids laid out as the model family expects)."""
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buffer, vocab_size=vocab_size, model_type="unigram",
        character_coverage=1.0, hard_vocab_limit=False, pad_id=pad_id, unk_id=unk_id, bos_id=bos_id,
        eos_id=eos_id, user_defined_symbols=user_defined_symbols or [], minloglevel=2, num_threads=1,
    )
    return spm.SentencePieceProcessor(model_proto=buffer.getvalue())


def caption_pairs(n_scenes: int = 200, seed: int = 0) -> list[tuple[str, str]]:
    """Parallel (english, pt-pt) captions of `n_scenes` synthetic scenes."""
    rng = random.Random(seed)
    return [pair for _ in range(n_scenes) for pair in captions(sample_scene(rng))]


def train_briefly(model, tokenizer, sources: list[str], targets: list[str], steps: int, seed: int = 0,
                  batch_size: int = 32, lr: float = 3e-3) -> None:
    """A few hundred AdamW steps of EN->PT teacher forcing: enough for peaked distributions and
    real end tokens (outputs of varied length), so greedy decoding is a meaningful comparison."""
    import torch

    if steps <= 0:
        return
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = rng.sample(range(len(sources)), batch_size)
        batch = tokenizer([sources[i] for i in idx], text_target=[targets[i] for i in idx],
                          padding=True, return_tensors="pt")
        batch["labels"][batch["labels"] == tokenizer.pad_token_id] = -100
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def _pieces(sp: spm.SentencePieceProcessor) -> list[tuple[str, float]]:
    return [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]


def build_tiny_mbart50(
    dest: Path, *, d_model: int = 32, layers: int = 2, heads: int = 4, ffn_dim: int = 64,
    vocab_size: int = 160, init_std: float = 0.2, train_steps: int = 0, extra_pieces: int = 0,
    never_end: bool = False, seed: int = 0,
) -> Path:
    """A tiny mBART-50 model folder shaped like Narrativa's fine-tune (en_XX source, pt_XX forced target).

    Like the Narrativa checkpoint, the config names no `tokenizer_class` and (as any transformers-5
    MBartConfig) no `normalize_before`: `translation.convert` must add both. `init_std` is larger
    than mBART's 0.02 so the random logits are peaked and greedy argmax has no near-ties that
    float32 rounding could flip between CTranslate2 and PyTorch. `train_steps` > 0 trains it
    briefly on the sample captions (see `train_briefly`).

    For benchmarks: `extra_pieces` appends never-produced pieces so the vocabulary (and the
    output layer, the costliest part of decoding a small model) has a realistic size, and
    `never_end` biases `</s>` out of the output so every translation runs to the length limit
    and two engines always decode the same number of tokens.
    """
    import torch
    from transformers import MBart50Tokenizer, MBartConfig, MBartForConditionalGeneration

    # mBART's sentencepiece layout: <unk>=0, <s>=1, </s>=2, no pad (the tokenizer adds fairseq's offset).
    sp = train_sentencepiece(caption_corpus(), vocab_size, pad_id=-1, unk_id=0, bos_id=1, eos_id=2)
    pieces = _pieces(sp) + [(f"▁unused{i}", -30.0) for i in range(extra_pieces)]
    tokenizer = MBart50Tokenizer(vocab=pieces, src_lang="en_XX", tgt_lang="pt_XX")
    config = MBartConfig(
        vocab_size=len(tokenizer), d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn_dim,
        decoder_ffn_dim=ffn_dim, max_position_embeddings=256, scale_embedding=True, init_std=init_std,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
        forced_bos_token_id=tokenizer.convert_tokens_to_ids("pt_XX"),
    )
    torch.manual_seed(seed)
    model = MBartForConditionalGeneration(config).eval()
    pairs = caption_pairs()
    train_briefly(model, tokenizer, [en for en, _ in pairs], [pt for _, pt in pairs], train_steps, seed)
    if never_end:
        model.final_logits_bias[0, tokenizer.eos_token_id] = -1e4
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def build_tiny_madlad(
    dest: Path, *, d_model: int = 32, layers: int = 2, heads: int = 4, d_ff: int = 64,
    vocab_size: int = 160, init_factor: float = 1.0, lm_head_std: float = 1.0, train_steps: int = 0,
    seed: int = 0,
) -> Path:
    """A tiny T5 model folder shaped like MADLAD-400 (gated-GELU, untied embeddings, `<2pt>` token).

    `<2pt>` is a sentencepiece user-defined piece, as in MADLAD's vocabulary, so it is one token.
    `lm_head_std` sets how peaked the random logits are, for the same reason as `init_std` above.
    """
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    # T5's sentencepiece layout: <pad>=0, </s>=1, <unk>=2, no bos.
    sp = train_sentencepiece(
        caption_corpus(), vocab_size, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        user_defined_symbols=MADLAD_LANG_TOKENS,
    )
    tokenizer = T5Tokenizer(vocab=_pieces(sp), extra_ids=0, additional_special_tokens=MADLAD_LANG_TOKENS)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=d_model // heads, d_ff=d_ff, num_layers=layers,
        num_decoder_layers=layers, num_heads=heads, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, initializer_factor=init_factor, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config).eval()
    # MADLAD's lm_head is its own matrix; transformers 5 ties it at init, so give it separate weights.
    # Saved beside `shared`, it loads untied (transformers warns that the config says tied).
    model.lm_head.weight = torch.nn.Parameter(torch.randn(len(tokenizer), d_model) * lm_head_std)
    model.config.tie_word_embeddings = False
    pairs = caption_pairs()
    train_briefly(model, tokenizer, [MADLAD_LANG_TOKENS[0] + " " + en for en, _ in pairs],
                  [pt for _, pt in pairs], train_steps, seed)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest
