"""`ptvl review`'s start in the CLI: the options checked against the profile (one line each, before anything
is served or written), then the CLI's process replaced by the server process (`launch`).

Why a process of its own: the CLI imports every command's modules (Luigi, matplotlib, the engines'
clients, the settings' whole tree: ~225 MB before any data), the server needs polars, pyarrow and
Starlette, and it runs for a whole review session.  `os.execve` keeps the process id, the terminal and
Ctrl+C; the server process gets everything resolved (pipeline/review/serve.py), so it never loads the
profile.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.checks import check_writable
from pipeline.review.guard import TokenError, read_token
from pipeline.review.serve import ServerArgs, check_allow_host, check_reviewer
from pipeline.review.tables import NoTranslations, translated_files
from pipeline.settings import ConfigError, Settings


@dataclass(frozen=True)
class ReviewOptions:
    """`ptvl review`'s options as the person gave them."""

    config: Path
    engine: str | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    reviewer: str | None = None  # None: the login name
    queue_size: int = 500
    seed: int = 0
    allow_hosts: tuple[str, ...] = field(default_factory=tuple)
    token_file: Path | None = None  # else $PTVL_REVIEW_TOKEN, else a random token per start


def check_options(settings: Settings, options: ReviewOptions) -> ServerArgs:
    """What the server process needs, resolved and checked; ConfigError (one line) otherwise.  Cheap: file
    checks only (the tables are read once, by the server process)."""
    engine = options.engine or settings.training.engine
    if engine not in settings.engines:
        raise ConfigError(f"no [engines.{engine}] table in {settings.config_path}; configured: "
                          f"{', '.join(settings.engines)}")
    splits = settings.datasets.splits()
    if not translated_files(settings.root, engine, splits):
        raise ConfigError(str(NoTranslations.for_engine(settings.root, engine)))
    check_writable(settings.layout.memory_dir, "memory folder")
    try:
        read_token(options.token_file)
    except (TokenError, ValueError) as e:
        raise ConfigError(str(e)) from None
    try:
        return ServerArgs(root=settings.root, engine=engine,
                          engines=tuple(dict.fromkeys([engine, *settings.translate.engines])), splits=tuple(splits),
                          host=options.host, port=options.port, reviewer=check_reviewer(options.reviewer),
                          allow_hosts=tuple(check_allow_host(h) for h in options.allow_hosts),
                          queue_size=options.queue_size, seed=options.seed, token_file=options.token_file)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def launch(args: ServerArgs) -> None:
    """Replace this process with the server process (`python -m pipeline.review`); returns only if the
    exec fails (OSError).  The token never goes on the command line (other users see it in `ps`): the
    server process reads it where the person put it, or makes one."""
    package_root = str(Path(__file__).resolve().parents[2])  # so `-m pipeline.review` finds this checkout
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "pipeline.review", *args.argv()], env)
