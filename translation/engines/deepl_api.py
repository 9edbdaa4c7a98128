"""DeepL EN -> PT-PT through the official `deepl` client, in requests of <= 50 texts and <= 128 KiB.

Retries are ours, not the client's (its ``max_network_retries`` is set to 0): the client retries a
read timeout like a refused connection, yet a request that timed out after it was sent may already
be billed, and a 429 spell of a few minutes outlasts its default 5 retries (about 16 s).  Our loop:

- 429: exponential back-off (1 s x 1.6 per try, capped at 120 s, +-23% jitter, the client's own
  curve) for up to ``max_429_wait_s`` of waiting in one spell; past that the request stops with
  `RateLimited`, which says when to rerun (everything stored so far is kept).
- 5xx and network errors: the same back-off, at most ``max_network_retries`` times in a row.
- A read timeout or a connection lost after the request went out: retried, and counted in
  `RequestCounters.possibly_billed_twice_*`: DeepL may have billed the first attempt.
- 400/413 (a request DeepL refuses): `RequestRejected`, never retried; the runner then splits the
  batch to find the text at fault and sets it aside.
"""
from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import deepl
import deepl.http_client
import requests
from pydantic import BaseModel, ConfigDict, Field

from ptvl_io import lifetime
from translation.engines.base import BaseEngine, Quota, Result
from translation.errors import ConfigurationError, EngineError, QuotaExceeded, RateLimited, RequestRejected
from translation.secrets import Secret, install_log_redaction, load_secret
from translation.sendable import text_problem

log = logging.getLogger(__name__)

# DeepL's documented request limits for /v2/translate; the client sends whatever it is given.
MAX_TEXTS_PER_REQUEST = 50
MAX_REQUEST_BYTES = 128 * 1024

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_JITTER = 0.23  # the deepl client's own back-off jitter


class DeepLSettings(BaseModel):
    """DeepL engine settings (embeddable in the run's TOML; holds no secret, only where to read it)."""

    model_config = ConfigDict(extra="forbid")

    source_lang: Literal["EN"] = "EN"
    target_lang: Literal["PT-PT"] = "PT-PT"
    formality: Literal["default", "more", "less", "prefer_more", "prefer_less"] = "default"
    # Captions are lowercase fragments without a final full stop (CC3M, VisDial): by default DeepL
    # "corrects" the start and end of a sentence (capital letter, final punctuation), so a PT caption
    # would differ from its EN source in form, not only language, and token statistics and the
    # `untranslated` flag would compare unlike things.  True keeps the source's form.
    preserve_formatting: bool = True
    # The next-generation model where DeepL has one for EN->PT-PT, the classic one otherwise; never an
    # error.  Explicit, because the API default may change, and part of the engine id (it changes output).
    model_type: Literal["quality_optimized", "prefer_quality_optimized", "latency_optimized"] = (
        "prefer_quality_optimized"
    )
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
    max_chars: int | None = Field(
        default=None, ge=1, description="texts longer than this are set aside, never sent (None: only the "
        "request limit applies)")
    max_network_retries: int = Field(
        default=5, ge=0, description="retries in a row on 5xx, timeouts and network errors")
    timeout_s: float = Field(default=60.0, ge=1, description="connect and read timeout of one request (the "
                             "client never waits less than 1 s)")
    max_429_wait_s: float = Field(
        default=900.0, ge=0, description="longest wait through one spell of HTTP 429 before the part stops "
        "(resumably); the back-off reaches its 120 s cap after about 6 minutes")
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=120.0, gt=0)
    backoff_multiplier: float = Field(default=1.6, ge=1)


def engine_id_for(settings: DeepLSettings, glossary_id: str | None = None) -> str:
    """The memory key of a DeepL configuration: every setting that changes the output, nothing secret."""
    glossary = glossary_id or settings.glossary or "none"
    return (
        f"deepl:{settings.source_lang.lower()}>{settings.target_lang.lower()}:split=off"
        f":formality={settings.formality}:glossary={glossary}"
        f":format={'keep' if settings.preserve_formatting else 'fix'}:model={settings.model_type}"
        f":context={'on' if settings.use_context else 'off'}"
    )


def _sent_before_failing(exc: deepl.ConnectionException) -> bool:
    """True unless the connection was never made (refused, DNS, connect timeout): then nothing was sent."""
    cause = exc.__cause__
    if isinstance(cause, requests.exceptions.ConnectTimeout):
        return False
    if isinstance(cause, requests.exceptions.ConnectionError):
        text = str(cause)
        return not any(s in text for s in ("NewConnectionError", "Failed to establish", "Name or service",
                                           "Connection refused", "nodename nor servname"))
    return True


class DeepLEngine(BaseEngine):
    """`translation.engines.base.Engine` for DeepL.

    `translate` splits its input into requests within the limits; `request_batches` exposes that
    split so the runner can store each request's results before sending the next one.
    `sleep` and `clock` replace time.sleep / time.monotonic (tests run minutes of back-off virtually).  The
    default sleep ends a back-off with `ptvl_io.lifetime.Stopping` once a stop is asked for (the parent
    died): no retry is sent after that.
    """

    def __init__(self, settings: DeepLSettings, auth_key: Secret | None = None, *,
                 sleep: Callable[[float], None] | None = None, clock: Callable[[], float] | None = None) -> None:
        super().__init__()
        self.settings = settings
        key = auth_key or load_secret(env=settings.auth_key_env, file=settings.auth_key_file, what="DeepL key")
        install_log_redaction(key)
        self._key = key
        self._sleep = sleep or lifetime.sleep
        self._clock = clock or time.monotonic
        # The client keeps these as module globals: no retries of its own (ours are above), our timeout.
        deepl.http_client.max_network_retries = 0
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

    def billed_so_far(self) -> int | None:
        """DeepL's own character counter for this key (the billing period's total)."""
        return int(self.usage().character.count)

    def quota(self) -> Quota | None:
        """DeepL's character count and limit (a limit of 10^12 or more, as DeepL reports "none", is None)."""
        c = self.usage().character
        limit = None if c.limit is None or c.limit >= 10**12 else int(c.limit)
        return Quota(used=int(c.count), limit=limit)

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
        body["preserve_formatting"] = self.settings.preserve_formatting
        body["model_type"] = self.settings.model_type
        return body

    def request_bytes(self, texts: list[str], context: str | None = None) -> int:
        """Size of the JSON body the client will send for `texts` (requests dumps with ensure_ascii)."""
        fixed = len(json.dumps(self._request_template(context)))
        return fixed + sum(len(json.dumps(t)) for t in texts) + 2 * max(len(texts) - 1, 0)

    def unsendable(self, text: str, context: str | None = None) -> str | None:
        """Why `text` cannot be sent (the runner sets it aside with this reason), or None."""
        problem = text_problem(text)
        if problem is not None:
            return problem
        if self.settings.max_chars is not None and len(text) > self.settings.max_chars:
            return "over_max_chars"
        if len(json.dumps(self._request_template(context))) + len(json.dumps(text)) > self.settings.max_request_bytes:
            return "too_long_for_request"
        return None

    def request_batches(self, texts: list[str], context: str | None = None) -> list[slice]:
        """Consecutive slices of `texts`, each one request within the text-count and byte limits."""
        max_n, max_bytes = self.settings.max_texts_per_request, self.settings.max_request_bytes
        fixed = len(json.dumps(self._request_template(context)))
        out: list[slice] = []
        start, size = 0, fixed
        for i, t in enumerate(texts):
            tb = len(json.dumps(t))
            if fixed + tb > max_bytes:
                raise RequestRejected(
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
        out = self._with_retries(
            lambda: self._translator.translate_text(
                texts,
                source_lang=self.settings.source_lang,
                target_lang=self.settings.target_lang,
                split_sentences=deepl.SplitSentences.OFF,
                preserve_formatting=self.settings.preserve_formatting,
                model_type=self.settings.model_type,
                formality=None if self.settings.formality == "default" else self.settings.formality,
                glossary=self._glossary_id,
                context=context,
            ),
            chars=sum(len(t) for t in texts),
        )
        if len(out) != len(texts):
            raise EngineError(f"DeepL returned {len(out)} translations for {len(texts)} texts")
        self.counters.requests += 1
        # billed_characters is the server's own count for each text (the client always asks for it).
        return [Result(text=r.text, score=None, billed_chars=int(r.billed_characters)) for r in out]

    def _with_retries(self, fn: Callable, *, chars: int):
        """Run one request with our back-off (see the module docstring); errors mapped by `_call`."""
        s, c = self.settings, self.counters
        backoff = s.backoff_initial_s
        spell_429 = 0.0  # seconds waited in the current 429 spell
        failures = 0  # 5xx / network failures in a row
        while True:
            lifetime.check_stop()  # as late as can be: a stop asked for now sends nothing more, retries included
            try:
                return self._call(fn, raw=True)
            except deepl.TooManyRequestsException:
                wait = min(backoff, s.backoff_max_s) * (1 + _JITTER * random.uniform(-1, 1))
                if spell_429 + wait > s.max_429_wait_s:
                    raise RateLimited(
                        f"DeepL answered HTTP 429 (too many requests) for {spell_429:.0f} s in a row, over "
                        f"[engines.deepl] max_429_wait_s = {s.max_429_wait_s:g}; rerun in about "
                        f"{max(15, round(2 * spell_429 / 60))} minutes (or raise max_429_wait_s)"
                    ) from None
                c.retries_429 += 1
                c.waited_429_s += wait
                spell_429 += wait
            except deepl.ConnectionException as e:
                if _sent_before_failing(e):
                    c.possibly_billed_twice_requests += 1
                    c.possibly_billed_twice_chars += chars
                failures += 1
                if failures > s.max_network_retries:
                    raise EngineError(f"DeepL request failed after {failures - 1} retries (no HTTP status): "
                                      f"{self._key.redact(str(e))}") from None
                wait = min(backoff, s.backoff_max_s) * (1 + _JITTER * random.uniform(-1, 1))
                c.retries_other += 1
            except deepl.DeepLException as e:
                code = e.http_status_code
                if code is None or code < 500:
                    raise self._mapped(e) from None
                failures += 1
                if failures > s.max_network_retries:
                    raise EngineError(f"DeepL request failed after {failures - 1} retries (HTTP {code}): "
                                      f"{self._key.redact(str(e))}") from None
                wait = min(backoff, s.backoff_max_s) * (1 + _JITTER * random.uniform(-1, 1))
                c.retries_other += 1
            self._sleep(wait)
            backoff = min(backoff * s.backoff_multiplier, s.backoff_max_s)

    def _call(self, fn, *args, raw: bool = False, **kwargs):
        """Run a client call; map its exceptions to ours (raw: let the client's pass, for the retry
        loop), with any secret removed from the message."""
        try:
            return fn(*args, **kwargs)
        except deepl.DeepLException as e:
            if raw:
                raise
            raise self._mapped(e) from None

    def _mapped(self, e: deepl.DeepLException) -> Exception:
        msg = self._key.redact(str(e))
        if isinstance(e, deepl.QuotaExceededException):
            return QuotaExceeded(f"DeepL quota exceeded (HTTP 456): {msg}")
        if isinstance(e, deepl.AuthorizationException):
            free, url = self._key.reveal().endswith(":fx"), self.settings.server_url or ""
            if free and "api.deepl.com" in url:
                hint = "a Free key (ending in :fx) sent to the Pro URL; remove server_url or use api-free.deepl.com"
            elif not free and "api-free.deepl.com" in url:
                hint = "a Pro key sent to the Free URL; remove server_url or use api.deepl.com"
            else:
                hint = "the key is wrong or revoked"
            return ConfigurationError(f"DeepL rejected the key (HTTP 403: {hint}): {msg}")
        if isinstance(e, deepl.TooManyRequestsException):
            return RateLimited(f"DeepL answered HTTP 429 (too many requests): {msg}; rerun in a few minutes")
        code = e.http_status_code
        if code in (400, 413):
            return RequestRejected(f"DeepL refused the request (HTTP {code}): {msg}")
        status = f"HTTP {code}" if code else "no HTTP status"
        return EngineError(f"DeepL request failed ({status}): {msg}")
