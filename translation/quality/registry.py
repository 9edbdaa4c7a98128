"""The registered quality flags, in order: the one list everything else is derived from.

The order is the order of `FLAG_NAMES`, of the `flags` column and of a row's reasons, and the order in which
the detectors run.  Adding a flag: write its module (its `Flag` declaration, named FLAG) and add the module
to `FLAGS` below, where its reasons should appear (see the package docstring).
"""
from __future__ import annotations

from translation.quality import (
    brazilian,
    empty,
    low_score,
    overgeneration,
    repetitive,
    truncated,
    untranslated,
)
from translation.quality.base import Flag

FLAGS: tuple[Flag, ...] = (
    empty.FLAG,
    untranslated.FLAG,
    brazilian.FLAG,
    truncated.FLAG,
    repetitive.FLAG,
    overgeneration.FLAG,
    low_score.FLAG,
)
FLAG_NAMES: tuple[str, ...] = tuple(f.name for f in FLAGS)


def check_registry(flags: tuple[Flag, ...]) -> dict[str, frozenset[str]]:
    """Validate `flags` and return, per flag name, the names of the flags that suppress it.

    Raises ValueError on a duplicate name, an exclusive flag after a non-exclusive one, or a `suppresses`
    entry that is not a flag registered after the one suppressing it (so one pass in order decides).
    """
    names = [f.name for f in flags]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate flag names in {names}")
    first_plain = next((i for i, f in enumerate(flags) if not f.exclusive), len(flags))
    if any(f.exclusive for f in flags[first_plain:]):
        raise ValueError("exclusive flags must come before every other flag")
    suppressors: dict[str, set[str]] = {n: set() for n in names}
    for i, f in enumerate(flags):
        for target in f.suppresses:
            if target not in names[i + 1:]:
                raise ValueError(f"flag {f.name!r} suppresses {target!r}, which is not a flag registered after it")
            suppressors[target].add(f.name)
    return {n: frozenset(s) for n, s in suppressors.items()}


SUPPRESSED_BY: dict[str, frozenset[str]] = check_registry(FLAGS)


def flag(name: str) -> Flag:
    """The registered flag called `name` (KeyError naming the registered ones otherwise)."""
    for f in FLAGS:
        if f.name == name:
            return f
    raise KeyError(f"no quality flag {name!r}; flags are {', '.join(FLAG_NAMES)}")
