"""API keys as `Secret` values that never print, and log redaction that keeps them out of every log record.

A key is read from an environment variable (default ``DEEPL_AUTH_KEY``) or from a file, never from a
settings model: settings are dumped beside runs and passed to Luigi as parameters, so they only hold
the *name* of the variable or the *path* of the file.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from translation.errors import ConfigurationError

REDACTED = "***"


class Secret:
    """A string that prints as ``***``; call `reveal()` at the one place that needs the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not value:
            raise ConfigurationError("empty secret")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """`text` with every occurrence of the secret replaced by ``***``."""
        return text.replace(self._value, REDACTED)

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):  # pickling would write the value into Luigi/multiprocessing payloads
        raise TypeError("Secret values cannot be pickled; pass the env var name or key file path instead")


def load_secret(*, env: str | None = None, file: Path | str | None = None, what: str = "API key") -> Secret:
    """Read a secret from `file` if given, else from the environment variable `env`.

    Raises ConfigurationError naming the variable or the file (never the value) when it is missing.
    Surrounding whitespace (the trailing newline of a key file) is stripped.
    """
    if file is not None:
        path = Path(file).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigurationError(f"cannot read {what} file {path}: {e.strerror}") from None
        if not value:
            raise ConfigurationError(f"{what} file {path} is empty")
        return Secret(value)
    if env is not None:
        value = os.environ.get(env, "").strip()
        if not value:
            raise ConfigurationError(f"{what} not found: set the environment variable {env} or give a key file")
        return Secret(value)
    raise ConfigurationError(f"no source for the {what}: give an environment variable name or a file")


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites records so that no registered secret survives formatting.

    Attach it to a handler, or use `install_log_redaction` which redacts every record the process
    creates (logger filters alone miss records from child loggers such as ``urllib3.connectionpool``).
    """

    def __init__(self, secrets: list[Secret] | None = None) -> None:
        super().__init__()
        self.secrets: list[Secret] = list(secrets or [])

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record, self.secrets)
        return True


def _redact_record(record: logging.LogRecord, secrets: list[Secret]) -> None:
    if not secrets:
        return
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: keep the raw template, still redacted below
        message = str(record.msg)
    redacted = message
    for s in secrets:
        redacted = s.redact(redacted)
    if redacted != message:
        record.msg, record.args = redacted, None
    if record.exc_info and record.exc_info[1] is not None:
        # Format the traceback now, redacted, so handlers use the cached text instead of the raw exception.
        text = logging.Formatter().formatException(record.exc_info)
        for s in secrets:
            text = s.redact(text)
        record.exc_text, record.exc_info = text, None


_installed: list[Secret] = []
_install_lock = threading.Lock()


def install_log_redaction(secret: Secret) -> None:
    """Redact `secret` from every log record created in this process from now on (idempotent).

    Wraps the log record factory, so it covers the ``deepl``, ``urllib3`` and ``requests`` loggers and
    any handler (pytest's caplog included) without knowing them in advance.
    """
    with _install_lock:
        if secret in _installed:
            return
        if not _installed:
            previous = logging.getLogRecordFactory()

            def factory(*args, **kwargs) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                _redact_record(record, _installed)
                return record

            logging.setLogRecordFactory(factory)
        _installed.append(secret)
