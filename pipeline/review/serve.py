"""Start `ptvl review`: the run's tables, the overlay and the app, checked before the server binds."""
from __future__ import annotations

import getpass
import os
from dataclasses import dataclass

from pipeline.checks import check_writable
from pipeline.review.app import create_app
from pipeline.review.tables import NoTranslations, RunTables
from pipeline.settings import ConfigError, Settings
from translation.overlay import HumanOverlay

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ReviewServer:
    """The app to serve, the overlay it writes (closed by the caller), and what to tell the person."""

    app: object
    overlay: HumanOverlay
    banner: str
    warning: str | None


def review_server(settings: Settings, engine: str | None, *, host: str, port: int, reviewer: str | None,
                  queue_size: int, seed: int) -> ReviewServer:
    """Everything `ptvl review` needs, or ConfigError (one line) before anything is served or written."""
    engine = engine or settings.training.engine
    if engine not in settings.engines:
        raise ConfigError(f"no [engines.{engine}] table in {settings.config_path}; configured: "
                          f"{', '.join(settings.engines)}")
    engines = list(dict.fromkeys([engine, *settings.translate.engines]))
    try:
        tables = RunTables(settings.root, engines, settings.datasets.splits(), engine)
    except NoTranslations as e:
        raise ConfigError(str(e)) from None
    check_writable(settings.layout.memory_dir, "memory folder")
    who = reviewer or os.environ.get("USER") or getpass.getuser()
    overlay = HumanOverlay(settings.layout.human_overlay)
    loopback = host in LOOPBACK
    app = create_app(settings.root, tables, overlay, who=who, queue_size=queue_size, seed=seed,
                     allowed_hosts=["127.0.0.1", "localhost", "::1", "[::1]"] if loopback else None)
    shown = f"[{host}]" if ":" in host else host
    others = ", ".join(n for n in tables.engines if n != engine) or "no other engine"
    banner = (f"ptvl review {settings.root}: engine {engine} ({tables.chosen.rows.height:,} distinct strings; "
              f"also {others}), reviewer {who}\n  open http://{shown}:{port}/  (Ctrl+C stops; every action is "
              "saved as it is made)")
    warning = None if loopback else f"bound to {host}: anyone who can reach this port can write corrections"
    return ReviewServer(app, overlay, banner, warning)
