"""What the LLM translator sends and keeps: the prompt (a chat template or a profile template), the source cut to
`max_input_length` tokens, the new-token budget, and the output cut at stop strings and cleaned of prompt echoes.

Pure functions over the checkpoint's own Hugging Face tokenizer, shared by every backend (CTranslate2,
transformers, vLLM), so the three send the same token ids and keep the same text. Nothing here imports torch.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from translation.errors import ConfigurationError

SOURCE = "{source}"
# The user message when the model's chat template builds the prompt (Tower, EuroLLM-Instruct, Gervásio-instruct,
# Tradutor are chat models); a profile's `prompt` replaces the template altogether.
DEFAULT_MESSAGE = ("Translate the following English text into European Portuguese (pt-PT, as written in Portugal). "
                   "Answer with the translation only.\n\nEnglish: {source}")
CHAT_TEMPLATE_FILE = "chat_template.jinja"
# A label a chat model puts before its answer ("Portuguese: ...", "Tradução: ..."): not part of the translation.
_LABEL = re.compile(r"^\s*(?:(?:european|brazilian)\s+)?(?:portuguese|portugu[eê]s|pt(?:-pt)?|tradu[cç][aã]o|"
                    r"translation|target)\s*(?:\([^)\n]*\))?\s*:\s*", re.IGNORECASE)


class PromptError(ConfigurationError, ValueError):
    """A prompt that cannot work: no {source}, or no chat template and no `prompt` (raised at start-up)."""


@dataclass(frozen=True)
class PromptSpec:
    """How a source becomes a prompt.

    template: the profile's `prompt` (text with {source}); None: the chat template builds it from `message`
    (and `system`, when given). chat_template: the checkpoint's (None: it has none)."""

    template: str | None
    message: str
    system: str | None
    chat_template: str | None

    def check(self, model: str) -> None:
        """Raise PromptError (one line) when this spec cannot build a prompt for `model`."""
        if self.template is not None:
            if SOURCE not in self.template:
                raise PromptError(f"prompt {self.template!r} has no {SOURCE}: the source text would never be sent")
            return
        if self.chat_template is None:
            raise PromptError(f"{model} has no chat template and the profile sets no prompt; set one, e.g. "
                              'prompt = "Translate from English to European Portuguese:\\n{source}\\n"')
        if SOURCE not in self.message:
            raise PromptError(f"message {self.message!r} has no {SOURCE}: the source text would never be sent")

    def digest(self) -> str:
        """12 hex digits naming what is sent around a source (the template, or chat template + message +
        system): a changed prompt is a new engine id, so it never reads the old prompt's memory."""
        what = ({"template": self.template} if self.template is not None else
                {"chat_template": self.chat_template, "message": self.message, "system": self.system})
        return hashlib.blake2b(json.dumps(what, sort_keys=True).encode(), digest_size=6).hexdigest()

    def text(self, tokenizer, source: str) -> str:
        """The prompt for `source` as text (special tokens written out, as the chat template renders them)."""
        if self.template is not None:
            return self.template.replace(SOURCE, source)
        return tokenizer.apply_chat_template(self._messages(source), add_generation_prompt=True, tokenize=False)

    def ids(self, tokenizer, sources: Sequence[str]) -> list[list[int]]:
        """Prompt token ids: a profile template gets the tokenizer's own special tokens (Llama's <s>); a
        rendered chat template already holds them, so none are added (as `apply_chat_template` does)."""
        texts = [self.text(tokenizer, s) for s in sources]
        return tokenizer(texts, add_special_tokens=self.template is not None)["input_ids"] if texts else []

    def echoes(self, source: str) -> list[str]:
        """What a model may repeat before its answer, longest first: the visible prompt with the source, and
        the instruction before {source}."""
        body = self.template if self.template is not None else self.message
        head = body.split(SOURCE, 1)[0]
        return [e for e in (body.replace(SOURCE, source).strip(), head.strip()) if e]

    def _messages(self, source: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": self.message.replace(SOURCE, source)}]


def read_chat_template(folder: Path) -> str | None:
    """The chat template saved with a tokenizer (chat_template.jinja, or tokenizer_config.json's
    "chat_template"), read from the files, so an engine id is computed without loading transformers."""
    jinja = folder / CHAT_TEMPLATE_FILE
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, list):  # named templates: the "default" one is used
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        return template
    return None


@dataclass(frozen=True)
class Sources:
    """Sources cut to `max_input_length` tokens (tokens of the source alone, not of the prompt)."""

    texts: list[str]
    tokens: list[int]
    truncated: list[bool]


def cut_sources(tokenizer, sources: Sequence[str], max_input_length: int) -> Sources:
    """Each source, its token count (at most `max_input_length`) and whether its end was dropped; a cut source
    is the text of its first `max_input_length` tokens."""
    out = Sources([], [], [])
    all_ids = tokenizer(list(sources), add_special_tokens=False)["input_ids"] if sources else []
    for text, ids in zip(sources, all_ids, strict=True):
        cut = len(ids) > max_input_length
        out.texts.append(tokenizer.decode(ids[:max_input_length]) if cut else text)
        out.tokens.append(min(len(ids), max_input_length))
        out.truncated.append(cut)
    return out


def new_token_budget(source_tokens: int, ratio: float, extra: int, cap: int) -> int:
    """Most new tokens for a source of `source_tokens` tokens: ceil(ratio x tokens) + extra, at most cap. A
    translation is about as long as its source; the rest of the budget is what a run-on may waste."""
    return max(1, min(cap, math.ceil(ratio * source_tokens) + extra))


def _strip_prefix(text: str, prefix: str) -> str | None:
    """`text` without `prefix`, matched ignoring whitespace and ending at a word boundary; None: no match."""
    want = "".join(prefix.split())
    i = j = 0
    while i < len(want):
        if j >= len(text):
            return None
        if text[j].isspace():
            j += 1
            continue
        if text[j] != want[i]:
            return None
        i += 1
        j += 1
    if j < len(text) and want[-1:].isalnum() and text[j].isalnum():
        return None  # 'Translate' is not an echo of the start of 'Translated'
    return text[j:]


@dataclass(frozen=True)
class Cleaned:
    """An output as kept: `text` (possibly ""), whether a prompt echo was stripped, whether a stop string cut it."""

    text: str
    echo: bool
    stopped: bool


def clean_output(raw: str, source: str, echoes: Sequence[str], stops: Sequence[str]) -> Cleaned:
    """The translation in a generated text: a prompt echo stripped (the prompt, or its instruction and then the
    source), the text cut at the first stop string after that, and a leading answer label ("Portuguese:")
    dropped. An output that is only the echo becomes "" (the `empty` flag; nothing is kept as a translation).

    The same function runs on partial outputs during generation (`stopped` ends decoding early), so stopping
    early and cutting afterwards keep the same text.
    """
    text = raw.lstrip()  # trailing whitespace kept: a stop string may be "\n"
    echo = False
    for candidate in echoes:
        rest = _strip_prefix(text, candidate)
        if rest is not None:
            text, echo = rest.lstrip(), True
            if candidate != echoes[0]:  # the instruction was repeated: the source may follow it
                again = _strip_prefix(text, source)
                if again is not None and (not again.strip() or again[:1] in "\n:"):
                    text = again.lstrip(":").lstrip()
            break
    stopped = False
    cuts = [i for s in stops if s and (i := text.find(s)) >= 0]
    if cuts:
        text, stopped = text[:min(cuts)], True
    if not _LABEL.match(source):
        text = _LABEL.sub("", text, count=1)
    return Cleaned(text.strip(), echo, stopped)
