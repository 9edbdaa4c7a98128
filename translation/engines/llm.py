"""The `llm` engine: any Hugging Face causal LM as an EN -> PT-PT translator (Tradutor, EuroLLM, Tower, Gervásio).

The prompt comes from the model's chat template (with `message`, and `system` when given) or from the profile's
`prompt` template; decoding is greedy or beam search with a new-token budget that grows with the source and
optional stop strings. Three backends run it (translation/engines/llm_backends.py): CTranslate2's Generator on a
folder from `ptvl convert-model llm` (CPU and GPU; the default), transformers `generate` for a family
CTranslate2 cannot convert, and vLLM's offline `LLM.generate` (an optional extra for GPU machines).

Every backend returns generated token ids; what is kept is decided here, once: the text is cut at the first
stop string and cleaned of a prompt echo (translation/engines/llm_prompt.py), and an output that is empty or
only the echo is kept as "" (the `empty` flag; no translation). Output that runs on past the translation is
kept as generated, for the `overgeneration` flag to see. Sources are cut at `max_input_length` tokens and
counted, as for the seq2seq engines.
"""
from __future__ import annotations

from dataclasses import dataclass

from translation.engines.llm_backends import open_backend
from translation.engines.llm_prompt import clean_output, cut_sources, new_token_budget
from translation.engines.llm_settings import LLMSettings, Raw, llm_engine_id, prompt_spec
from translation.engines.seq2seq import (
    EngineConfigError,
    EngineStats,
    Seq2SeqEngine,
    Translation,
    mean_logprob,
)


@dataclass(frozen=True)
class Generated(Translation):
    """A `Translation` with what cleaning did: a prompt echo stripped, a stop string reached."""

    echo: bool = False
    stopped: bool = False


@dataclass
class LLMStats(EngineStats):
    """EngineStats plus the outputs whose prompt echo was stripped, cut at a stop string, or left empty."""

    echo_stripped: int = 0
    stopped: int = 0
    empty: int = 0

    def add(self, translations) -> None:
        translations = list(translations)
        super().add(translations)
        for t in translations:
            self.echo_stripped += t.echo
            self.stopped += t.stopped
            self.empty += not t.text


class LLMEngine(Seq2SeqEngine):
    """A causal LM translating through one of the backends."""

    def __init__(self, settings: LLMSettings) -> None:
        super().__init__()
        self.settings = settings
        self.spec = prompt_spec(settings)
        self.spec.check(settings.model)
        self.backend = open_backend(settings)
        self.tokenizer = self.backend.tokenizer
        loaded = getattr(self.tokenizer, "chat_template", None)
        if isinstance(loaded, dict):  # named templates: the "default" one is used (as read_chat_template does)
            loaded = loaded.get("default")
        if settings.prompt is None and loaded != self.spec.chat_template:
            raise EngineConfigError(f"{settings.model}: the tokenizer's chat template differs from the one in its "
                                    "files, so the engine id would not name the prompt sent")
        self._engine_id = llm_engine_id(settings)
        self.stats = LLMStats()

    def close(self) -> None:
        self.backend.close()

    def translate_detailed(self, texts: list[str]) -> list[Generated]:
        """Translate `texts` (order kept); updates `stats`."""
        if not texts:
            return []
        s = self.settings
        sources = cut_sources(self.tokenizer, texts, s.max_input_length)
        prompts = self.spec.ids(self.tokenizer, sources.texts)
        budgets = [new_token_budget(n, s.new_tokens_ratio, s.new_tokens_extra, s.max_new_tokens)
                   for n in sources.tokens]
        echoes = [self.spec.echoes(src) for src in sources.texts]

        def stop_at(i: int, ids: list[int]) -> bool:
            return bool(s.stop) and clean_output(self._decode(ids), sources.texts[i], echoes[i], s.stop).stopped

        raws = self.backend.generate(prompts, budgets, stop_at if s.stop else None)
        out = []
        for i, raw in enumerate(raws):
            ids, logprobs = self._kept(raw, budgets[i], lambda ids, i=i: stop_at(i, ids))
            ended = bool(ids) and ids[-1] in self.backend.end_ids
            cleaned = clean_output(self._decode(ids), sources.texts[i], echoes[i], s.stop)
            score = mean_logprob(sum(logprobs), len(logprobs)) if logprobs is not None else raw.score
            out.append(Generated(
                text=cleaned.text, score=score, input_tokens=len(prompts[i]), output_tokens=len(ids),
                input_truncated=sources.truncated[i],
                output_capped=not ended and not cleaned.stopped and len(ids) >= budgets[i],
                echo=cleaned.echo, stopped=cleaned.stopped,
            ))
        self.stats.add(out)
        return out

    def _kept(self, raw: Raw, budget: int, stopped) -> tuple[list[int], list[float] | None]:
        """The generated ids up to the first end token, the budget, or the token that reached a stop string
        (a backend that stopped early already ends there; one that could not is cut here the same way)."""
        ids = raw.ids[:budget]
        end = next((k for k, t in enumerate(ids) if t in self.backend.end_ids), None)
        if end is not None:
            ids = ids[:end + 1]
        if self.settings.stop and stopped(ids):
            ids = ids[:next(k for k in range(1, len(ids) + 1) if stopped(ids[:k]))]
        return ids, raw.logprobs[:len(ids)] if raw.logprobs is not None else None

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
