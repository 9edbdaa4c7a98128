"""`ptvl status`: what a run root holds, stage by stage, what its memory holds per engine id, which parts
are leased right now, and the billing of each engine (with the reconciliation's warning).  Reads only:
nothing is run, sent or written."""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.billing import engine_billing, engine_ids
from pipeline.layout import ENGINE_ID_FILE
from pipeline.leases import latest, read_leases
from pipeline.memory_files import legacy_folders, memory_census
from pipeline.settings import Settings
from pipeline.tasks import STAGES


@dataclass
class RunStatus:
    """The lines `ptvl status` prints (the billing warnings last), and those warnings (they set its exit code)."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _stages(settings: Settings, config: str) -> list[str]:
    out = ["stages (target tasks complete):"]
    for name, (what, targets) in STAGES.items():
        tasks = targets(config, settings)
        done = sum(1 for t in tasks if t.complete())
        mark = "done" if tasks and done == len(tasks) else f"{done}/{len(tasks)}"
        out.append(f"  {name:10} {mark:>9}  {what}")
    return out


def _memory(settings: Settings) -> list[str]:
    layout = settings.layout
    if not layout.memory_dir.is_dir():
        return ["memory: empty"]
    tables: dict[str, list[str]] = {}
    for n, e in engine_ids(settings, list(settings.engines)).items():
        tables.setdefault(e, []).append(n)
    out = ["memory (engine id: texts, billed characters):"]
    for engine_id, st in sorted(memory_census(settings.root).items()):
        names = f" [engines.{', engines.'.join(tables[engine_id])}]" if engine_id in tables else ""
        out.append(f"  {engine_id}{names}: {st.rows:,} texts, {st.billed_chars:,} chars billed")
    old = legacy_folders(layout)
    if old:
        out.append(f"  read from the layout before engine-id folders: {', '.join(p.name for p in old)}")
    for folder in sorted(p for p in layout.memory_dir.iterdir() if (p / ENGINE_ID_FILE).exists()):
        for lease in latest(read_leases(folder / "_leases")).values():
            if not lease.released:
                state = "holder gone" if lease.dead() else "held"
                out.append(f"  lease {folder.name} part {lease.part + 1}/{lease.parts}: {state} by {lease.describe()}")
    return out


def run_status(settings: Settings, config: str) -> RunStatus:
    """`ptvl status` for the profile at `config` (see the module docstring)."""
    st = RunStatus([f"run root {settings.root} (profile {settings.fingerprint()})"])
    st.lines += _stages(settings, config)
    st.lines += _memory(settings)
    billing = engine_billing(settings.root, engine_ids(settings, list(settings.engines)))
    st.lines.append("billing:" if billing else "billing: nothing translated yet")
    for name, b in billing.items():
        st.lines.append(f"  {b.line(name)}")
        w = b.warning(name)
        if w:
            st.warnings.append(w)
    st.lines += [f"WARNING: {w}" for w in st.warnings]
    return st
