"""The LLM pre-flight: whether V-Glória can be trained and evaluated on a causal LM, before anything is
trained or written.

Five checks on the LLM as training would load it (its dtype, its device), with a random bridge and random
visual features, in a second or two on a tiny LM:
1. load        the LLM and its tokenizer load, and `VGloria` accepts them (an nn.Embedding table, a linear
               head, a body that runs from input embeddings and takes rows that are not in its table);
2. forward     one forward with visual rows and [RET]: V + 1 finite logits, equal to the LLM's own forward
               on the real tokens before the first virtual row;
3. train step  the training losses on 2 examples, finite, with gradients reaching the bridge;
4. decoding    greedy decoding of 2 prompts with the cache gives the logits of the uncached forward at every
               step, and beam search runs;
5. visdial     option scoring of 2 options (with and without the image) equals scoring each option alone.

Any failure names the family, the check and the reason in one line (`LLMRefused`); `ptvl check-llm` prints
the whole table. The LLM is loaded once: `keep=True` hands it to the training that follows in the same
process (`training.model.hand_over`).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from training.config import ModelConfig
from training.decoding import greedy_trace, next_logits
from training.distributed import default_device
from training.llm_access import LLMUnsupported, drop_handed_over, error_line, hand_over
from training.model import VIS, VGloria, vgloria
from training.scoring import option_losses

CHECKS = ("load", "forward", "train step", "decoding", "visdial")
VIS_DIM, K = 16, 2  # a random CLS bridge: the bridge is checked by pipeline.checks.check_model, not here
# Largest difference allowed between two ways of computing the same numbers, relative to their scale:
# fp32 rounding, or half precision's ~3 significant digits through every layer. A wrong position or a lost
# cache state moves logits by a large fraction of their range (Bamba: 1.9, MiniMax: 6.4).
TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2, "fp16": 5e-2}
CAPTIONS = ["um gato preto em cima de uma mesa", "duas pessoas numa praia"]
QUESTION = "um gato Q: de que cor é o gato? A:"
OPTIONS = [" preto", " é branco e castanho"]

Status = Literal["ok", "failed", "skipped"]


@dataclass
class CheckResult:
    name: str
    status: Status
    reason: str = ""
    seconds: float = 0.0


@dataclass
class LLMReport:
    """What the pre-flight found: the family, its size and each check's outcome."""

    llm: str
    model_type: str = "?"
    params: int | None = None
    dtype: str = ""
    device: str = ""
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status == "ok" for c in self.checks)

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.checks)

    def failure(self) -> str | None:
        """The one-line refusal: the LLM, its family, the first check that failed and why."""
        bad = next((c for c in self.checks if c.status == "failed"), None)
        if bad is None:
            return None
        return (f"LLM {self.llm} ({self.model_type}) cannot be used: the pre-flight check '{bad.name}' failed: "
                f"{bad.reason}")


class LLMRefused(ValueError):
    """The pre-flight refused the LLM; str() is the one-line reason, `.report` the whole table."""

    def __init__(self, report: LLMReport) -> None:
        super().__init__(report.failure())
        self.report = report


def _close(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest |got - want| over the finite entries, relative to the largest |want| (at least 1)."""
    keep = torch.isfinite(want)
    if not torch.equal(keep, torch.isfinite(got)):
        return float("inf")
    diff = (got.float() - want.float())[keep].abs()
    return float(diff.max() / want.float()[keep].abs().max().clamp_min(1.0)) if diff.numel() else 0.0


def _feats(n: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"cls": {-1: (torch.randn(n, VIS_DIM, generator=g) * 2).to(device)}, "tokens": {}}


def _real_tokens(model: VGloria, n: int) -> list[int]:
    """n ids of ordinary text (special tokens excluded), however the tokenizer splits the captions."""
    ids = [t for c in CAPTIONS for t in model.tokenize([c])[0]]
    special = {model.tokenizer.pad_token_id, model.tokenizer.bos_token_id, model.eos_id}
    ids = [t for t in ids if t not in special] or [t for t in range(model.vocab) if t not in special]
    return (ids * n)[:n]


@torch.no_grad()
def check_forward(model: VGloria, tol: float) -> None:
    """Visual rows and [RET] through the body and the head: V + 1 finite logits. On the real tokens before the
    first virtual row: the logits of the LLM's own forward, and the same logits as within the whole row (a
    model whose earlier positions see later tokens is not a causal LM: XLNet, a bidirectional XLM)."""
    device = model.ret_in.device
    real = _real_tokens(model, 5)
    head = model.bos + real[:2]
    row = head + [VIS] * K + real[2:4] + [model.ret_id] + real[4:]
    vis = model.visual_tokens(_feats(1, device))[0]

    def logits(ids: list[int], slots: torch.Tensor | None) -> torch.Tensor:
        emb = model.embed(torch.tensor([ids], device=device), slots)
        return model.logits(model.body(inputs_embeds=emb, use_cache=False).last_hidden_state)

    full = logits(row, vis)
    if full.shape != (1, len(row), model.vocab + 1):
        raise AssertionError(f"logits of shape {tuple(full.shape)}, expected (1, {len(row)}, {model.vocab + 1})")
    if not torch.isfinite(full).all():
        raise AssertionError("non-finite logits with visual rows and [RET] in the input")
    alone = logits(head, None)
    own = model.lm(input_ids=torch.tensor([head], device=device), use_cache=False).logits
    diff = _close(alone[..., : model.vocab], own)
    if diff > tol:
        raise AssertionError(f"logits differ from the LLM's own forward by {diff:.3g} (relative; allowed {tol:g})")
    diff = _close(full[:, : len(head)], alone)
    if diff > tol:
        raise AssertionError(f"not a causal LM: later tokens change the logits of earlier ones (by {diff:.3g}, "
                             "relative), so it cannot be trained to continue a prefix")


def check_train_step(model: VGloria) -> None:
    """The training losses of 2 examples (one followed by the other, FROMAGe's concatenation): finite, and
    their gradient reaches the bridge and the [RET] row."""
    model.zero_grad(set_to_none=True)
    losses = model(_feats(2, model.ret_in.device), model.tokenize(CAPTIONS), [1, None])
    if not torch.isfinite(losses.total):
        raise AssertionError(f"non-finite training loss {losses.as_floats()}")
    losses.total.backward()
    for name, p in model.trainable_parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            raise AssertionError(f"non-finite gradient on {name}")
    if not any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.bridge.parameters()):
        raise AssertionError("no gradient reaches the bridge")
    model.zero_grad(set_to_none=True)


@torch.no_grad()
def check_decoding(model: VGloria, tol: float, steps: int = 4) -> None:
    """Cached greedy decoding of 2 prompts (a caption, [RET] suppressed; an answer, [RET] allowed): at every
    step the logits of one uncached forward over the prefix and the tokens chosen so far. Then beam search,
    cached against uncached."""
    vis = model.visual_tokens(_feats(1, model.ret_in.device))[0]
    for prompt, allow_ret in (([], False), (model.tokenize([QUESTION])[0], True)):
        prefix = model._prefix(vis, prompt)
        ids, cached = greedy_trace(model, prefix, steps, allow_ret=allow_ret, stop=False)
        fed = torch.cat([prefix, model.embed(torch.tensor([ids[:-1]], device=prefix.device))], 1)
        h = model.body(inputs_embeds=fed, use_cache=False).last_hidden_state[0, prefix.shape[1] - 1 :]
        diff = _close(cached, next_logits(model, h, allow_ret))
        if diff > tol:
            raise AssertionError(f"cached decoding differs from the uncached forward by {diff:.3g} (relative; "
                                 f"allowed {tol:g}) within {len(ids)} tokens")
    beams = [model.generate_ids(model._prefix(vis, []), steps, num_beams=2, allow_ret=False, cached=c)
             for c in (True, False)]
    if model.cfg.dtype == "fp32" and beams[0] != beams[1]:  # half precision may break a near tie either way
        raise AssertionError(f"cached beam search gives {beams[0]}, uncached {beams[1]}")


@torch.no_grad()
def check_visdial(model: VGloria, tol: float) -> None:
    """Scoring 2 options in one batch (as evaluation does), with and without the image, equals scoring each
    option alone in an unpadded forward."""
    feats = _feats(1, model.ret_in.device)
    for image in (True, False):
        got = model.option_losses(feats, [QUESTION], [OPTIONS], image=image)
        alone = option_losses(model, feats, [QUESTION], [OPTIONS], chunk=1, image=image, how="full")
        if not torch.isfinite(got).all():
            raise AssertionError(f"non-finite option scores {got.tolist()}")
        diff = _close(got, alone)
        if diff > tol:
            raise AssertionError(f"scores {got[0].tolist()} differ from scoring each option alone "
                                 f"{alone[0].tolist()} ({'with' if image else 'without'} the image)")


def _model_type(llm: str) -> str:
    try:
        from transformers import AutoConfig  # deferred: transformers loads only with a model

        return str(AutoConfig.from_pretrained(llm).model_type)
    except Exception:  # noqa: BLE001 - the load check reports the real error
        return "?"


def check_llm(cfg: ModelConfig, device: torch.device | str | None = "cpu", *, keep: bool = False) -> LLMReport:
    """Run the five checks on cfg.llm (in cfg.dtype on `device`; None: training's default, this rank's GPU
    or the CPU); a check after a failed load is skipped. keep=True hands the loaded LLM to the next `load_llm`
    of this process when every check passed. The global random state is left as it was."""
    device = torch.device(device if device is not None else default_device())
    report = LLMReport(cfg.llm, dtype=cfg.dtype, device=str(device))
    probe_cfg = cfg.model_copy(update={"bridge": "cls", "bridge_kwargs": {}, "k": K, "layer": -1,
                                       "compile": False, "feature_norm": "none"})
    tol = TOLERANCE[cfg.dtype]
    model: VGloria | None = None

    def run(name: str, fn: Callable[[], None]) -> None:
        if model is None and name != "load":
            report.checks.append(CheckResult(name, "skipped", "the LLM did not load"))
            return
        start = time.perf_counter()
        try:
            fn()
            report.checks.append(CheckResult(name, "ok", seconds=time.perf_counter() - start))
        except Exception as e:  # noqa: BLE001 - any failure of any family is this check's answer
            reason = str(e) if isinstance(e, (AssertionError, LLMUnsupported)) and str(e) else error_line(e)
            report.checks.append(CheckResult(name, "failed", reason, time.perf_counter() - start))

    def load() -> None:
        nonlocal model
        report.model_type = _model_type(cfg.llm)
        model = vgloria(probe_cfg, device, vis_dim=VIS_DIM, load_visual=False, seed=0)
        report.model_type = model.model_type
        report.params = sum(p.numel() for p in model.lm.parameters())

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        run("load", load)
        run("forward", lambda: check_forward(model, tol))
        run("train step", lambda: check_train_step(model))
        run("decoding", lambda: check_decoding(model, tol))
        run("visdial", lambda: check_visdial(model, tol))
    if keep and report.ok and model is not None:
        hand_over(cfg, device, model.lm, model.tokenizer)
    else:
        drop_handed_over()
    return report


def require_llm(cfg: ModelConfig, device: torch.device | str | None = "cpu", *, keep: bool = False) -> LLMReport:
    """check_llm, raising `LLMRefused` (one line) when a check failed."""
    report = check_llm(cfg, device, keep=keep)
    if not report.ok:
        raise LLMRefused(report)
    return report
