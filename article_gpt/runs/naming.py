"""How runs are named by their overrides: ``model.heads=4`` -> ``heads=4``, in W&B and in sweep
summaries alike, so both compare runs by what differs.
"""

from __future__ import annotations

from article_gpt.runs.record import FIELDS

# Overrides that say where a run wrote, not what it trained: never part of a run's name.
IGNORED_PREFIXES = ("hydra.", "paths.")
IGNORED_KEYS = {"tags", "trial"}  # trial: the Optuna sweeper's bookkeeping (study, storage, number)
RESERVED = (*FIELDS, "job")  # a short key never reads as a column of the record or of the summary


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """``["model.heads=4", "+x=1", "~y"]`` -> ``{"model.heads": "4", "x": "1", "y": "(deleted)"}``."""
    parsed = {}
    for o in overrides:
        key, sep, value = o.lstrip("+~").partition("=")
        if key.startswith(IGNORED_PREFIXES) or key in IGNORED_KEYS:
            continue
        parsed[key] = value if sep else "(deleted)"
    return parsed


def short_keys(keys: list[str]) -> dict[str, str]:
    """The shortest dotted suffix that is unique among ``keys`` and no record field: model.heads -> heads."""
    short = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            cand = ".".join(parts[-n:])
            others = [k for k in keys if k != key and (k == cand or k.endswith("." + cand))]
            if not others and cand not in RESERVED:
                break
        short[key] = cand
    return short
