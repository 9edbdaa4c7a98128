"""DeepL EN -> PT-PT through the official `deepl` client, in requests of <= 50 texts and <= 128 KiB."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Literal

import deepl
import deepl.http_client
from pydantic import BaseModel, ConfigDict, Field

from translation.engines.base import Result
from translation.errors import ConfigurationError, EngineError, QuotaExceeded
from translation.secrets import Secret, install_log_redaction, load_secret

log = logging.getLogger(__name__)

# DeepL's documented request limits for /v2/translate; the client sends whatever it is given.
MAX_TEXTS_PER_REQUEST = 50
MAX_REQUEST_BYTES = 128 * 1024

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


class DeepLSettings(BaseModel):
    """DeepL engine settings (embeddable in the run's TOML; holds no secret, only where to read it)."""

    model_config = ConfigDict(extra="forbid")

    source_lang: Literal["EN"] = "EN"
    target_lang: Literal["PT-PT"] = "PT-PT"
    formality: Literal["default", "more", "less", "prefer_more", "prefer_less"] = "default"
    glossary: str | None = Field(
        default=None, description="DeepL glossary id (UUID) or glossary name, resolved to its id at start-up"
    )
    use_context: bool = Field(
        default=False,
        description="Pass a per-batch context (VisDial: the image caption). Off by default: VisDial answer "
        "strings are shared by many dialogs; when on, the memory key covers text + context.",
    )
    price_per_million_chars: float = Field(default=20.0, ge=0, description="EUR; DeepL API Pro usage price")
    server_url: str | None = Field(default=None, description="None: the official endpoint for the key type")
    auth_key_env: str = Field(default="DEEPL_AUTH_KEY", description="environment variable holding the key")
    auth_key_file: Path | None = Field(default=None, description="file holding the key; wins over the env var")
    max_texts_per_request: int = Field(default=MAX_TEXTS_PER_REQUEST, ge=1, le=MAX_TEXTS_PER_REQUEST)
    max_request_bytes: int = Field(default=MAX_REQUEST_BYTES, ge=4096, le=MAX_REQUEST_BYTES)
    max_network_retries: int = Field(
        default=5, ge=0, description="the client's retries on 429, 5xx and network errors (process-wide)"
    )
    timeout_s: float = Field(default=10.0, gt=0, description="the client's minimum request timeout (process-wide)")


def engine_id_for(settings: DeepLSettings, glossary_id: str | None = None) -> str:
    """The memory key of a DeepL configuration: every setting that changes the output, nothing secret."""
    glossary = glossary_id or settings.glossary or "none"
    return (
        f"deepl:{settings.source_lang.lower()}>{settings.target_lang.lower()}:split=off"
        f":formality={settings.formality}:glossary={glossary}:context={'on' if settings.use_context else 'off'}"
    )


class DeepLEngine:
    """`translation.engines.base.Engine` for DeepL.

    `translate` splits its input into requests within the limits; `request_batches` exposes that
    split so the runner can store each request's results before sending the next one.
    """

    def __init__(self, settings: DeepLSettings, auth_key: Secret | None = None) -> None:
        self.settings = settings
        key = auth_key or load_secret(env=settings.auth_key_env, file=settings.auth_key_file, what="DeepL key")
        install_log_redaction(key)
        self._key = key
        # The client keeps these as module globals; set them from our settings, not its defaults.
        deepl.http_client.max_network_retries = settings.max_network_retries
        deepl.http_client.min_connection_timeout = settings.timeout_s
        self._translator = deepl.Translator(key.reveal(), server_url=settings.server_url)
        self._glossary_id = self._resolve_glossary(settings.glossary)
        self._engine_id = engine_id_for(settings, self._glossary_id)

    @property
    def engine_id(self) -> str:
        return self._engine_id

    @property
    def uses_context(self) -> bool:
        return self.settings.use_context

    def __repr__(self) -> str:
        return f"DeepLEngine({self._engine_id!r})"

    def close(self) -> None:
        self._translator.close()

    # -- start-up ---------------------------------------------------------------------------------

    def _resolve_glossary(self, glossary: str | None) -> str | None:
        if glossary is None or _UUID.match(glossary):
            return glossary
        matches = [g for g in self._call(self._translator.list_glossaries) if g.name == glossary]
        if len(matches) != 1:
            found = "no glossary" if not matches else f"{len(matches)} glossaries"
            raise ConfigurationError(f"DeepL glossary {glossary!r}: {found} with that name; give its id instead")
        g = matches[0]
        if (g.source_lang, g.target_lang) != ("EN", "PT"):
            raise ConfigurationError(f"DeepL glossary {glossary!r} is {g.source_lang}->{g.target_lang}, not EN->PT")
        return g.glossary_id

    def usage(self) -> deepl.Usage:
        """The account's character usage (count and limit) as the server reports it."""
        return self._call(self._translator.get_usage)

    # -- batching ---------------------------------------------------------------------------------

    def _request_template(self, context: str | None = None) -> dict:
        # Mirrors the JSON body deepl.Translator.translate_text builds, to size requests exactly.
        body: dict = {"target_lang": self.settings.target_lang, "source_lang": self.settings.source_lang}
        if self.settings.formality != "default":
            body["formality"] = self.settings.formality
        if self._glossary_id is not None:
            body["glossary_id"] = self._glossary_id
        body["text"] = []
        body["show_billed_characters"] = True
        if context is not None:
            body["context"] = context
        body["split_sentences"] = str(deepl.SplitSentences.OFF)
        return body

    def request_bytes(self, texts: list[str], context: str | None = None) -> int:
        """Size of the JSON body the client will send for `texts` (requests dumps with ensure_ascii)."""
        fixed = len(json.dumps(self._request_template(context)))
        return fixed + sum(len(json.dumps(t)) for t in texts) + 2 * max(len(texts) - 1, 0)

    def request_batches(self, texts: list[str], context: str | None = None) -> list[slice]:
        """Consecutive slices of `texts`, each one request within the text-count and byte limits."""
        max_n, max_bytes = self.settings.max_texts_per_request, self.settings.max_request_bytes
        fixed = len(json.dumps(self._request_template(context)))
        out: list[slice] = []
        start, size = 0, fixed
        for i, t in enumerate(texts):
            tb = len(json.dumps(t))
            if fixed + tb > max_bytes:
                raise EngineError(
                    f"text #{i} ({len(t)} characters) alone exceeds DeepL's {max_bytes}-byte request limit"
                )
            n = i - start
            if n > 0 and (n >= max_n or size + 2 + tb > max_bytes):
                out.append(slice(start, i))
                start, size, n = i, fixed, 0
            size += tb + (2 if n > 0 else 0)  # ", " separates list items in json.dumps
        if start < len(texts):
            out.append(slice(start, len(texts)))
        return out

    # -- translation ------------------------------------------------------------------------------

    def translate(self, texts: list[str], context: str | None = None) -> list[Result]:
        """Translate `texts` (one request per `request_batches` slice); `context` needs use_context."""
        if context is not None and not self.settings.use_context:
            raise ValueError("context given but use_context is off: the memory key would ignore it")
        results: list[Result] = []
        for s in self.request_batches(texts, context):
            results.extend(self._translate_request(texts[s], context))
        return results

    def _translate_request(self, texts: list[str], context: str | None) -> list[Result]:
        out = self._call(
            self._translator.translate_text,
            texts,
            source_lang=self.settings.source_lang,
            target_lang=self.settings.target_lang,
            split_sentences=deepl.SplitSentences.OFF,
            formality=None if self.settings.formality == "default" else self.settings.formality,
            glossary=self._glossary_id,
            context=context,
        )
        if len(out) != len(texts):
            raise EngineError(f"DeepL returned {len(out)} translations for {len(texts)} texts")
        # billed_characters is the server's own count for each text (the client always asks for it).
        return [Result(text=r.text, score=None, billed_chars=int(r.billed_characters)) for r in out]

    def _call(self, fn, *args, **kwargs):
        """Run a client call; map its exceptions to ours, with any secret removed from the message."""
        try:
            return fn(*args, **kwargs)
        except deepl.QuotaExceededException as e:
            raise QuotaExceeded(f"DeepL quota exceeded (HTTP 456): {self._key.redact(str(e))}") from None
        except deepl.AuthorizationException as e:
            raise ConfigurationError(f"DeepL rejected the key (HTTP 403): {self._key.redact(str(e))}") from None
        except deepl.DeepLException as e:
            status = f"HTTP {e.http_status_code}" if e.http_status_code else "no HTTP status"
            raise EngineError(f"DeepL request failed after the client's retries ({status}): "
                              f"{self._key.redact(str(e))}") from None
