"""The `ptvl review` server process (`python -m pipeline.review`, started by pipeline/review/launch.py):
the arguments the CLI resolved, checked again where a person could have typed them; the tables loaded;
the address printed once with its token; then uvicorn until Ctrl+C.

It imports no profile code and no torch: the settings' tree and the CLI stay in the CLI's process.
"""
from __future__ import annotations

import argparse
import getpass
import ipaddress
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from pipeline.layout import RunLayout
from pipeline.review.app import create_app
from pipeline.review.guard import WILDCARDS, TokenError, host_names, new_token, read_token
from pipeline.review.tables import NoTranslations, RunTables
from translation.overlay import HumanOverlay
from translation.sendable import first_unsafe

MAX_REVIEWER_CHARS = 80
_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?", re.I)


def check_reviewer(name: str | None) -> str:
    """The name stored with every action: the login name by default; not blank, no control characters.
    ValueError (one line) otherwise."""
    if name is None:
        name = os.environ.get("USER") or getpass.getuser()
    name = name.strip()
    if not name:
        raise ValueError("--reviewer is blank: give the name to store with every correction (e.g. --reviewer ana)")
    if len(name) > MAX_REVIEWER_CHARS:
        raise ValueError(f"--reviewer is {len(name)} characters; at most {MAX_REVIEWER_CHARS}")
    bad = first_unsafe(name)
    if bad is not None or any(c in name for c in "\t\n\r"):
        raise ValueError(f"--reviewer has {bad.describe() if bad else 'a tab or a line break'}: give a plain name")
    return name


def check_allow_host(name: str) -> str:
    """A Host name to serve besides --host (a proxy's name): a DNS name or an IP address, no wildcard.
    ValueError (one line) otherwise."""
    bare = name.strip().lower().strip("[]")
    try:
        ipaddress.ip_address(bare)
        return bare
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(bare):
        raise ValueError(f"--allow-host {name!r} is not a host name or an IP address (no port, no scheme, no "
                         "wildcard: a wildcard would let any site's DNS name reach the server)")
    return bare.rstrip(".")


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


@dataclass(frozen=True)
class ServerArgs:
    """What the server process needs, resolved from the profile by the CLI."""

    root: Path
    engine: str  # the engine under review
    engines: tuple[str, ...]  # every engine to show beside it (the reviewed one first)
    splits: tuple[tuple[str, str], ...]
    host: str
    port: int
    reviewer: str
    allow_hosts: tuple[str, ...] = ()
    queue_size: int = 500
    seed: int = 0
    token_file: Path | None = None

    def argv(self) -> list[str]:
        out = ["--root", str(self.root), "--engine", self.engine, "--host", self.host, "--port", str(self.port),
               "--reviewer", self.reviewer, "--queue-size", str(self.queue_size), "--seed", str(self.seed)]
        out += [a for e in self.engines for a in ("--also", e)]
        out += [a for d, s in self.splits for a in ("--split", f"{d}/{s}")]
        out += [a for h in self.allow_hosts for a in ("--allow-host", h)]
        return out + (["--token-file", str(self.token_file)] if self.token_file else [])

    @classmethod
    def parse(cls, argv: list[str]) -> ServerArgs:
        p = argparse.ArgumentParser(prog="python -m pipeline.review",
                                    description="the `ptvl review` server process (start it with `ptvl review`)")
        p.add_argument("--root", type=Path, required=True)
        p.add_argument("--engine", required=True)
        p.add_argument("--also", action="append", default=[])
        p.add_argument("--split", action="append", default=[])
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8765)
        p.add_argument("--reviewer")
        p.add_argument("--allow-host", action="append", default=[])
        p.add_argument("--queue-size", type=int, default=500)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--token-file", type=Path)
        a = p.parse_args(argv)
        return cls(a.root, a.engine, tuple(dict.fromkeys([a.engine, *a.also])),
                   tuple(tuple(s.split("/", 1)) for s in a.split), a.host, a.port, check_reviewer(a.reviewer),
                   tuple(check_allow_host(h) for h in a.allow_host), a.queue_size, a.seed, a.token_file)

    def url_host(self) -> str:
        """The name to print in the address: the bound host, or for every address a name that reaches it."""
        host = self.allow_hosts[0] if self.host in WILDCARDS and self.allow_hosts else (
            "127.0.0.1" if self.host in WILDCARDS else self.host)
        return f"[{host}]" if ":" in host else host


def main(argv: list[str] | None = None) -> int:
    """The server process: check, load, print the address once, serve until Ctrl+C."""
    try:
        args = ServerArgs.parse(sys.argv[1:] if argv is None else argv)
        token = read_token(args.token_file) or new_token()
        tables = RunTables(args.root, list(args.engines), list(args.splits), args.engine)
    except (ValueError, TokenError, NoTranslations) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    hosts = host_names(args.host, args.allow_hosts)
    overlay = HumanOverlay(RunLayout(args.root).human_overlay)
    try:
        app = create_app(args.root, tables, overlay, who=args.reviewer, token=token, hosts=hosts,
                         queue_size=args.queue_size, seed=args.seed)
        others = ", ".join(n for n in tables.engines if n != args.engine) or "no other engine"
        print(f"ptvl review {args.root}: engine {args.engine} ({tables.chosen.rows.height:,} distinct strings; also "
              f"{others}), reviewer {args.reviewer}\n  open http://{args.url_host()}:{args.port}/?token={token}\n"
              "  (the link logs this browser in; Ctrl+C stops; every action is saved as it is made)", flush=True)
        if not is_loopback(args.host):
            print(f"warning: bound to {args.host}: whoever reaches port {args.port} and has the token can write "
                  f"corrections, over plain HTTP (use a trusted network or an HTTPS proxy). Host names served: "
                  f"{', '.join(hosts)} (--allow-host NAME adds one)", file=sys.stderr, flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    finally:
        overlay.close()
    return 0
