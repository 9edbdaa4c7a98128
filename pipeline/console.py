"""How ptvl talks to a terminal: the console, logging levels (ours at INFO, third parties behind -v), and
typer help texts that may name config tables in brackets."""
from __future__ import annotations

import inspect
import logging
import os
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

# Wide when not a terminal (CI logs, files), so tracebacks and paths are not wrapped mid-word.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

# Our own loggers; INFO from anything else (open_clip logs on the root logger, matplotlib, tensorboard)
# is detail for `-v`, not console output.
OWN_LOGGERS = ("ptvl", "pipeline", "translation", "training", "eval")


class _QuietThirdParty(logging.Filter):
    """Without -v: our INFO lines and everyone's warnings; third-party INFO/DEBUG only with -v."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".")[0] in OWN_LOGGERS


def setup_logging(verbose: bool) -> None:
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    if not verbose:
        handler.addFilter(_QuietThirdParty())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[handler], force=True)
    # Luigi's own INFO lines are noise next to our progress bars.
    logging.getLogger("luigi").setLevel(logging.WARNING)
    logging.getLogger("luigi-interface").setLevel(logging.WARNING)
    # The Java tools' stderr (PTBTokenizer, METEOR) is relayed by eval.metrics.caption at DEBUG: -v only.
    if not verbose:  # transformers' "Loading weights" / "Writing model shards" bars (read at its import)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # The deepl client logs every request at INFO (~136k lines for CC3M): keep it to real problems.
    logging.getLogger("deepl").setLevel(logging.DEBUG if verbose else logging.WARNING)


def escape_help(typer_app: typer.Typer, seen: set[int] | None = None) -> None:
    """Help texts name config tables ("[engines.<name>]", "[model] llm"); typer renders help as Rich
    markup, which would eat every [...] as a style tag.  Escape every command's and option's help once,
    here, instead of in each string (a new option cannot forget it)."""
    seen = set() if seen is None else seen  # an option object shared by commands (ConfigOpt): once
    for info in typer_app.registered_commands:
        cb = info.callback
        if info.help:
            info.help = escape(info.help)
        elif cb is not None and cb.__doc__:
            cb.__doc__ = escape(inspect.cleandoc(cb.__doc__))
        for param in inspect.signature(cb).parameters.values() if cb is not None else ():
            default = param.default
            if isinstance(default, typer.models.ParameterInfo) and default.help and id(default) not in seen:
                seen.add(id(default))
                default.help = escape(default.help)
    for group in typer_app.registered_groups:
        escape_help(group.typer_instance, seen)
