"""Tiny translation models in the real model families' shapes, trained on parallel (English, PT-PT) pairs.

- `build_tiny_mbart50`: mBART-50 shaped like Narrativa's fine-tune (MBart50Tokenizer, en_XX source, pt_XX forced
  target);
- `build_tiny_madlad`: T5 shaped like MADLAD-400 (gated-GELU, untied head, `<2pt>` as one token);
- `build_tiny_llm`: a Llama causal LM (EuroLLM's, Tower's, Gervásio's family) with a ChatML chat template,
  trained on chat prompts (built exactly as the `llm` engine builds them) followed by their translation.

Each trains a small tokenizer on the pairs and saves model and tokenizer with `save_pretrained`, so a folder loads
(and converts with `ptvl convert-model`) through exactly the code path a downloaded checkpoint does. The sample
run builds its translators with them (pipeline/sample/translators.py) and the tests their tiny models
(tests/tinymodels.py).
"""
from __future__ import annotations

import io
import random
from collections.abc import Sequence
from pathlib import Path

from translation.engines.llm_prompt import DEFAULT_MESSAGE, PromptSpec

MADLAD_LANG_TOKENS = ["<2pt>", "<2en>"]
# The chat format of EuroLLM-Instruct and Qwen (and many others): the answer ends with <|im_end|>, the eos.
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLM_SPECIAL = ["<|endoftext|>", "<pad>", "<|im_start|>", "<|im_end|>"]

Pairs = Sequence[tuple[str, str]]


def interleaved(pairs: Pairs) -> list[str]:
    """English and Portuguese sides of `pairs`, interleaved (a tokenizer corpus)."""
    return [text for pair in pairs for text in pair]


def train_sentencepiece(lines: list[str], vocab_size: int, *, pad_id: int, unk_id: int, bos_id: int, eos_id: int,
                        user_defined_symbols: list[str] | None = None):
    """Train a unigram sentencepiece model in memory (ids laid out as the model family expects)."""
    import sentencepiece as spm  # deferred: only the tiny seq2seq builders need it

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buffer, vocab_size=vocab_size, model_type="unigram",
        character_coverage=1.0, hard_vocab_limit=False, pad_id=pad_id, unk_id=unk_id, bos_id=bos_id,
        eos_id=eos_id, user_defined_symbols=user_defined_symbols or [], minloglevel=2, num_threads=1,
    )
    return spm.SentencePieceProcessor(model_proto=buffer.getvalue())


def _pieces(sp) -> list[tuple[str, float]]:
    return [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]


def train_briefly(model, tokenizer, sources: list[str], targets: list[str], steps: int, seed: int = 0,
                  batch_size: int = 32, lr: float = 3e-3) -> list[float]:
    """`steps` AdamW steps of EN->PT teacher forcing (a seq2seq model); the losses. A few hundred give peaked
    distributions and real end tokens (outputs of varied length); a few dozen leave a model that loops."""
    import torch  # deferred: torch loads only when a model is trained

    losses: list[float] = []
    if steps <= 0:
        return losses
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = rng.sample(range(len(sources)), min(batch_size, len(sources)))
        batch = tokenizer([sources[i] for i in idx], text_target=[targets[i] for i in idx],
                          padding=True, return_tensors="pt")
        batch["labels"][batch["labels"] == tokenizer.pad_token_id] = -100
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def build_tiny_mbart50(
    dest: Path, pairs: Pairs, *, d_model: int = 32, layers: int = 2, heads: int = 4, ffn_dim: int = 64,
    vocab_size: int = 160, init_std: float = 0.2, train_steps: int = 0, extra_pieces: int = 0,
    never_end: bool = False, seed: int = 0, lr: float = 3e-3,
) -> list[float]:
    """A tiny mBART-50 folder shaped like Narrativa's fine-tune (en_XX source, pt_XX forced target); the losses.

    Like the Narrativa checkpoint, the config names no `tokenizer_class` and (as any transformers-5
    MBartConfig) no `normalize_before`: `translation.convert` must add both. `init_std` is larger than mBART's
    0.02 so the random logits are peaked and greedy argmax has no near-ties that float32 rounding could flip
    between CTranslate2 and PyTorch. `train_steps` > 0 trains it on `pairs` (see `train_briefly`).

    For benchmarks: `extra_pieces` appends never-produced pieces so the vocabulary (and the output layer, the
    costliest part of decoding a small model) has a realistic size, and `never_end` biases `</s>` out of the
    output so every translation runs to the length limit and two engines always decode the same number of tokens.
    """
    import torch  # deferred: torch and transformers load only when a model is built
    from transformers import MBart50Tokenizer, MBartConfig, MBartForConditionalGeneration

    # mBART's sentencepiece layout: <unk>=0, <s>=1, </s>=2, no pad (the tokenizer adds fairseq's offset).
    sp = train_sentencepiece(interleaved(pairs), vocab_size, pad_id=-1, unk_id=0, bos_id=1, eos_id=2)
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
    losses = train_briefly(model, tokenizer, [en for en, _ in pairs], [pt for _, pt in pairs], train_steps, seed,
                           lr=lr)
    if never_end:
        model.final_logits_bias[0, tokenizer.eos_token_id] = -1e4
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return losses


def build_tiny_madlad(
    dest: Path, pairs: Pairs, *, d_model: int = 32, layers: int = 2, heads: int = 4, d_ff: int = 64,
    vocab_size: int = 160, init_factor: float = 1.0, lm_head_std: float = 1.0, train_steps: int = 0,
    seed: int = 0, lr: float = 3e-3,
) -> list[float]:
    """A tiny T5 folder shaped like MADLAD-400 (gated-GELU, untied embeddings, `<2pt>` token); the losses.

    `<2pt>` is a sentencepiece user-defined piece, as in MADLAD's vocabulary, so it is one token.
    `lm_head_std` sets how peaked the random logits are, for the same reason as `init_std` above.
    """
    import torch  # deferred: torch and transformers load only when a model is built
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    # T5's sentencepiece layout: <pad>=0, </s>=1, <unk>=2, no bos.
    sp = train_sentencepiece(interleaved(pairs), vocab_size, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                             user_defined_symbols=MADLAD_LANG_TOKENS)
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
    losses = train_briefly(model, tokenizer, [MADLAD_LANG_TOKENS[0] + " " + en for en, _ in pairs],
                           [pt for _, pt in pairs], train_steps, seed, lr=lr)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return losses


def chat_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer (Llama-3 / GPT style) with ChatML's special tokens and chat template."""
    # deferred: transformers takes seconds to import; only model building needs it
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast  # deferred: as above

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=LLM_SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>",
                                        bos_token="<|endoftext|>", unk_token=None,
                                        additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = CHATML
    return tokenizer


def build_tiny_llm(
    dest: Path, pairs: Pairs, *, hidden: int = 64, layers: int = 2, heads: int = 4, vocab_size: int = 400,
    train_steps: int = 0, batch_size: int = 32, lr: float = 3e-3, init_std: float = 0.02,
    message: str = DEFAULT_MESSAGE, seed: int = 0,
) -> list[float]:
    """A tiny Llama chat model translating EN -> PT; the losses.

    Trained on the chat prompt the `llm` engine sends (the same `PromptSpec`, with `message`) followed by the
    translation and <|im_end|>; the loss covers the answer only, as in instruction tuning. Untrained
    (`train_steps` 0) with a large `init_std` it has peaked random logits, for token-exact backend comparisons.
    """
    import torch  # deferred: torch and transformers load only when a model is built
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = PromptSpec(None, message, None, CHATML)
    tokenizer = chat_tokenizer(interleaved(pairs) + [message] * 20, vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=512,
        initializer_range=init_std, tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    losses: list[float] = []
    if train_steps > 0:
        prompts = spec.ids(tokenizer, [en for en, _ in pairs])
        answers = tokenizer([pt for _, pt in pairs], add_special_tokens=False)["input_ids"]
        rows = [(p + a + [tokenizer.eos_token_id], len(p)) for p, a in zip(prompts, answers, strict=True)]
        rng = random.Random(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95))
        model.train()
        for _ in range(train_steps):
            batch = rng.sample(rows, min(batch_size, len(rows)))
            width = max(len(ids) for ids, _ in batch)
            x = torch.full((len(batch), width), tokenizer.pad_token_id)
            labels = torch.full((len(batch), width), -100)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (ids, n_prompt) in enumerate(batch):
                x[r, :len(ids)] = torch.tensor(ids)
                labels[r, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
                mask[r, :len(ids)] = 1
            loss = model(input_ids=x, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
    model.eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return losses
