"""The LLM engine's backends: each turns prompt token ids and per-prompt new-token budgets into generated ids.

- `CT2Generator`: CTranslate2's `Generator` on a `ptvl convert-model llm` folder (int8 on CPU, int8_float16 on
  GPU). Prompts of one length and budget go in one `generate_batch` call (batched by tokens), all calls queued
  at once so every replica works: with prompts of different lengths in one batch CTranslate2 forwards only the
  shortest prompt's length at once and decodes the rest token by token into the result. Greedy decoding
  reports each token's log-probability through the callback, which also ends an output at a stop string.
- `HFGenerate`: transformers `generate` (families CTranslate2 has no converter for), left-padded batches cut
  by tokens, a stopping criterion per row for budgets and stop strings.
- `VLLMGenerate`: vLLM's offline `LLM.generate`, one SamplingParams per prompt. An optional extra for GPU
  machines; NOT TESTED in this repository (no GPU and no vLLM wheel for the pinned torch here).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from translation.convert import MANIFEST
from translation.engines.ct2 import check_compute_type, cpu_threads
from translation.engines.llm_settings import LLMSettings, Raw, model_folder
from translation.engines.seq2seq import TOKENIZER_FILES, EngineConfigError, token_batches

StopAt = Callable[[int, list[int]], bool] | None


class GenerateBackend(Protocol):
    tokenizer: object
    end_ids: set[int]

    def generate(self, prompts: list[list[int]], budgets: list[int], stop_at: StopAt) -> list[Raw]:
        """New ids for each prompt (at most its budget; the end token included when one came). `stop_at(i, ids)`:
        whether output i may end now (a stop string); None: no stop strings."""
        ...

    def close(self) -> None: ...


def open_backend(settings: LLMSettings) -> GenerateBackend:
    return {"ct2": CT2Generator, "hf": HFGenerate, "vllm": VLLMGenerate}[settings.backend](settings)


def load_tokenizer(model: str):
    from transformers import AutoTokenizer  # deferred: transformers loads only when an engine is built

    try:
        return AutoTokenizer.from_pretrained(model)
    except OSError as err:
        raise EngineConfigError(f"cannot load the tokenizer of {model!r}: {err}") from err


def end_ids(tokenizer, folder: Path | None, extra: list[str]) -> set[int]:
    """Token ids that end an output: the tokenizer's eos, generation_config.json's eos_token_id (chat models end
    their turn with e.g. <|im_end|> or <|eot_id|>) and the profile's `end_tokens`."""
    ids = {tokenizer.eos_token_id} - {None}
    config = folder / "generation_config.json" if folder is not None else None
    if config is not None and config.is_file():
        eos = json.loads(config.read_text()).get("eos_token_id")
        ids |= set(eos if isinstance(eos, list) else [eos]) - {None}
    for token in extra:
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == tokenizer.unk_token_id:
            raise EngineConfigError(f"end token {token!r} is not a token of this tokenizer")
        ids.add(tid)
    if not ids:
        raise EngineConfigError("the model has no end token (no eos); name one in end_tokens")
    return ids


def group_by_shape(prompts: list[list[int]], budgets: list[int]) -> dict[tuple[int, int], list[int]]:
    """Prompt indices grouped by (prompt length, budget), longest prompts first."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (p, b) in enumerate(zip(prompts, budgets, strict=True)):
        groups.setdefault((len(p), b), []).append(i)
    return dict(sorted(groups.items(), reverse=True))


class CT2Generator:
    """CTranslate2's Generator on a folder converted with `ptvl convert-model llm`."""

    def __init__(self, settings: LLMSettings) -> None:
        import ctranslate2  # deferred: a compiled runtime only the CTranslate2 engines need

        self.settings = s = settings
        folder = Path(s.model)
        _check_folder(folder)
        check_compute_type(s.precision(), s.device, s.device_index[0])
        self.tokenizer = load_tokenizer(str(folder))
        self.end_ids = end_ids(self.tokenizer, folder, s.end_tokens)
        inter, intra = cpu_threads(s.device, s.inter_threads, s.intra_threads)
        self.generator = ctranslate2.Generator(str(folder), device=s.device, device_index=s.device_index,
                                               compute_type=s.precision(), inter_threads=inter, intra_threads=intra)

    def generate(self, prompts: list[list[int]], budgets: list[int], stop_at: StopAt) -> list[Raw]:
        s = self.settings
        greedy = s.beam_size == 1
        ids: list[list[int]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        pending = []
        for (_, budget), members in group_by_shape(prompts, budgets).items():

            def step(result, members=members) -> bool:
                i = members[result.batch_id]
                ids[i].append(result.token_id)
                logprobs[i].append(result.log_prob)
                return stop_at is not None and stop_at(i, ids[i])

            tokens = [self.tokenizer.convert_ids_to_tokens(prompts[i]) for i in members]
            pending.append((members, self.generator.generate_batch(
                tokens, max_batch_size=s.max_batch_tokens, batch_type="tokens", asynchronous=True,
                beam_size=s.beam_size, max_length=budget, end_token=sorted(self.end_ids), return_end_token=True,
                include_prompt_in_result=False, return_scores=True, callback=step if greedy else None)))
        out: list[Raw | None] = [None] * len(prompts)
        for members, results in pending:
            for i, result in zip(members, results, strict=True):
                r = result.result()
                seq = list(r.sequences_ids[0])
                if greedy:
                    # The callback saw the same tokens, each with its log-probability.
                    out[i] = Raw(seq, logprobs[i][:len(seq)])
                else:  # beam search: CTranslate2's score is the sum of log-probs over the length (penalty 1)
                    out[i] = Raw(seq, None, float(r.scores[0]) if r.scores else None)
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.generator = None


def _check_folder(folder: Path) -> None:
    hint = f"create it with: ptvl convert-model llm --from <HF id or folder> --to {folder} --quantization int8"
    if not folder.is_dir():
        raise EngineConfigError(f"LLM model folder {folder} does not exist; {hint}")
    missing = [n for n in ("model.bin", "config.json", *TOKENIZER_FILES) if not (folder / n).is_file()]
    if missing:
        raise EngineConfigError(f"{folder} is not a CTranslate2 LLM folder (missing {', '.join(missing)}); {hint}")
    manifest = folder / MANIFEST
    if manifest.is_file():
        kind = json.loads(manifest.read_text()).get("kind")
        if kind != "llm":
            raise EngineConfigError(f"{folder} holds a {kind} model, not an LLM (convert it with kind llm)")


class HFGenerate:
    """transformers `AutoModelForCausalLM.generate`."""

    def __init__(self, settings: LLMSettings) -> None:
        import torch  # deferred: torch and transformers load only when this backend is built
        from transformers import AutoModelForCausalLM

        self.settings = s = settings
        self.device = "cpu" if s.device == "cpu" else f"cuda:{s.device_index[0]}"
        if s.device == "cuda" and not torch.cuda.is_available():
            raise EngineConfigError("device 'cuda' requested but torch sees no CUDA device")
        self.tokenizer = load_tokenizer(s.model)
        try:
            self.model = AutoModelForCausalLM.from_pretrained(s.model, dtype=getattr(torch, s.precision()))
        except OSError as err:
            raise EngineConfigError(f"cannot load causal LM {s.model!r}: {err}") from err
        self.model = self.model.to(self.device).eval()
        self.end_ids = end_ids(self.tokenizer, model_folder(s.model), s.end_tokens)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.end_ids)

    def generate(self, prompts: list[list[int]], budgets: list[int], stop_at: StopAt) -> list[Raw]:
        import torch  # deferred: see __init__
        from transformers import (  # deferred: see __init__
            GenerationConfig,
            StoppingCriteria,
            StoppingCriteriaList,
        )

        s = self.settings
        greedy = s.beam_size == 1
        out: list[Raw | None] = [None] * len(prompts)
        by_budget: dict[int, list[int]] = {}
        for i, b in enumerate(budgets):
            by_budget.setdefault(b, []).append(i)
        for budget, members in by_budget.items():
            lengths = [len(prompts[i]) + budget for i in members]
            for batch in token_batches(lengths, s.max_batch_tokens):
                rows = [members[k] for k in batch]
                width = max(len(prompts[i]) for i in rows)
                # Left padding: every row's next token comes from the last column.
                input_ids = torch.tensor([[self.pad_id] * (width - len(prompts[i])) + prompts[i] for i in rows])
                mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in rows])

                class _Stop(StoppingCriteria):
                    """Per row: the output reached a stop string (finished rows are then padded)."""

                    def __init__(self, rows: list[int], width: int) -> None:
                        self.rows, self.width = rows, width

                    def __call__(self, seqs, scores, **kwargs):
                        return torch.tensor([stop_at(i, seqs[r, self.width:].tolist()) for r, i in enumerate(self.rows)],
                                            device=seqs.device)

                # Our own generation config replaces the checkpoint's (sampling, penalties, lengths), so outputs
                # depend only on the engine's settings.
                config = GenerationConfig(do_sample=False, num_beams=s.beam_size, max_new_tokens=budget,
                                          eos_token_id=sorted(self.end_ids), pad_token_id=self.pad_id,
                                          return_dict_in_generate=True, output_logits=greedy, output_scores=not greedy)
                stopping = StoppingCriteriaList([_Stop(rows, width)]) if stop_at is not None and greedy else None
                with torch.inference_mode():
                    g = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                            generation_config=config, stopping_criteria=stopping)
                new = g.sequences[:, width:]
                if greedy:
                    lps = torch.log_softmax(torch.stack(g.logits, dim=1).float(), dim=-1)
                    lps = lps.gather(-1, new.unsqueeze(-1)).squeeze(-1).tolist()
                for r, i in enumerate(rows):
                    seq = new[r].tolist()
                    if greedy:
                        out[i] = Raw(seq, lps[r])
                    else:
                        out[i] = Raw(seq, None, float(g.sequences_scores[r]))
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.model = None


class VLLMGenerate:
    """vLLM's offline `LLM.generate` (GPU). Untested here: written to vLLM's documented API, guarded on import."""

    def __init__(self, settings: LLMSettings) -> None:
        try:
            from vllm import LLM  # deferred: optional extra, GPU machines only
        except ImportError:
            raise EngineConfigError(
                'backend = "vllm" needs vLLM, which is not installed: pip install "ptvl[vllm]" on a GPU machine '
                "whose vLLM wheel fits the installed torch (README, LLM translators), or use backend = \"ct2\""
            ) from None
        self.settings = s = settings
        if s.device != "cuda":
            raise EngineConfigError('backend = "vllm" runs on GPUs only: set device = "cuda" (or use backend = "ct2")')
        if s.beam_size != 1:
            raise EngineConfigError('backend = "vllm" decodes greedily here; set beam_size = 1 or use backend = "ct2"')
        self.tokenizer = load_tokenizer(s.model)
        self.end_ids = end_ids(self.tokenizer, model_folder(s.model), s.end_tokens)
        self.llm = LLM(model=s.model, dtype=s.precision(), seed=0, tensor_parallel_size=len(s.device_index))

    def generate(self, prompts: list[list[int]], budgets: list[int], stop_at: StopAt) -> list[Raw]:
        from vllm import SamplingParams  # deferred: see __init__

        # Stop strings are applied by the engine afterwards (vLLM's own `stop` would end an output that starts
        # with "\n" at once, where the other backends strip it first).
        params = [SamplingParams(temperature=0.0, max_tokens=b, stop_token_ids=sorted(self.end_ids), logprobs=0,
                                 detokenize=False) for b in budgets]
        results = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        out = []
        for r in results:
            c = r.outputs[0]
            seq = list(c.token_ids)
            lps = [step[t].logprob for step, t in zip(c.logprobs, seq, strict=True)] if c.logprobs else None
            out.append(Raw(seq, lps, None))
        return out

    def close(self) -> None:
        self.llm = None
