"""Pretrain a tiny causal LM (Glória's GPT-Neo architecture) on texts and save it as a Hugging Face folder.

Used for the offline sample: the folder is later loaded by `AutoModelForCausalLM.from_pretrained`, exactly
like Glória. Two choices make the tiny LM usable by a bridge (see the issue's prototype notes):
- sequences are PACKED to `seq_len` tokens: an LM trained on single short captions only ever uses positions
  0..8, and its [RET] state and visual-prefix conditioning then barely work;
- texts may come grouped in DOCUMENTS (e.g. the five captions of one image): inside a document earlier texts
  predict later ones, so the LM learns to read its context, as any real LM does. An LM pretrained on
  independent captions learns to ignore everything before the last EOS, including a visual prefix.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ptvl_io import atomic_dir

SPECIAL = {"eos": "<|endoftext|>", "pad": "<pad>"}


def train_tokenizer(texts: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer (GPT-2 / Glória style) trained on `texts`, wrapped for transformers."""
    # deferred: transformers takes seconds to import; only the sample's model building needs it
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,  # deferred: transformers loads only when a tokenizer or model is needed
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[SPECIAL["eos"], SPECIAL["pad"]],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=SPECIAL["eos"], bos_token=SPECIAL["eos"],
                                   unk_token=None, pad_token=SPECIAL["pad"])


def packed_batches(docs: list[list[list[int]]], eos: int, seq_len: int, batch: int, rng: random.Random):
    """Endless (batch, seq_len) batches: random documents (their texts shuffled, each followed by EOS)
    concatenated and cut at seq_len."""
    while True:
        x = torch.empty(batch, seq_len, dtype=torch.long)
        for i in range(batch):
            seq: list[int] = []
            while len(seq) < seq_len:
                doc = list(docs[rng.randrange(len(docs))])
                rng.shuffle(doc)
                for text in doc:
                    seq += text + [eos]
            x[i] = torch.tensor(seq[:seq_len])
        yield x


def pretrain_tiny_lm(
    texts: Sequence[str | Sequence[str]], dest: Path, arch: str = "gpt_neo", *, hidden: int = 128, layers: int = 2,
    heads: int = 4, vocab_size: int = 512, max_positions: int = 256, seq_len: int = 96, batch: int = 16,
    steps: int = 300, lr: float = 3e-3, seed: int = 0, tie_embeddings: bool = True,
    progress: Callable[[int, float], None] | None = None,
) -> Path:
    """Train a tokenizer and a tiny causal LM on `texts`; save both to `dest` (atomically) and return it.

    Each item of `texts` is a text or a document (a list of texts that belong together, e.g. the captions
    of one image). arch: "gpt_neo" (Glória's architecture; tied head) or "llama" (Gervásio's; untied head
    unless tie_embeddings). `progress(step, loss)` is called every step.
    """
    # deferred: transformers, as in train_tokenizer
    from transformers import GPTNeoConfig, GPTNeoForCausalLM, LlamaConfig, LlamaForCausalLM

    if not texts:
        raise ValueError("no texts to pretrain on")
    if seq_len > max_positions:
        raise ValueError(f"seq_len {seq_len} exceeds max_positions {max_positions}")
    torch.manual_seed(seed)
    docs_text = [[t] if isinstance(t, str) else list(t) for t in texts]
    flat = [t for d in docs_text for t in d]
    tokenizer = train_tokenizer(flat, vocab_size)
    eos = tokenizer.eos_token_id
    ids = iter(tokenizer(flat, add_special_tokens=False)["input_ids"])
    docs = [[next(ids) for _ in d] for d in docs_text]
    common = dict(vocab_size=len(tokenizer), bos_token_id=eos, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    if arch == "gpt_neo":
        config = GPTNeoConfig(hidden_size=hidden, num_layers=layers, num_heads=heads, max_position_embeddings=max_positions,
                              attention_types=[[["global", "local"], max(1, layers // 2)]] if layers > 1
                              else [[["global"], 1]], window_size=max_positions, intermediate_size=4 * hidden,
                              embed_dropout=0.0, attention_dropout=0.0, resid_dropout=0.0, **common)
        model = GPTNeoForCausalLM(config)
    elif arch == "llama":
        config = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                             num_key_value_heads=heads, intermediate_size=4 * hidden,
                             max_position_embeddings=max_positions, tie_word_embeddings=tie_embeddings, **common)
        model = LlamaForCausalLM(config)
    else:
        raise ValueError(f"unknown arch {arch!r}: gpt_neo or llama")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * max(0.05, 1 - s / max(1, steps)))
    batches = packed_batches(docs, eos, seq_len, batch, random.Random(seed))
    for step in range(steps):
        x = next(batches)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if progress is not None:
            progress(step + 1, float(loss.detach()))
    model.eval()
    dest = Path(dest)
    with atomic_dir(dest, replace=True) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return dest
