"""The data paths a training config names exist and hold text, checked before torch loads.

``data.train.path`` and ``data.val.path`` go through the loader's own rule for which files a
source names (article_gpt/data/files.py), so a path that fails here would fail in the loader,
and one that passes here names the files the loader reads. No torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from article_gpt.data.files import VALID_SOURCE, SourceError, resolve_files
from article_gpt.errors import ConfigError

DATA_PATH_KEYS = ("data.train.path", "data.val.path")
MEDIUM_FOLDER = "my_articles"  # under paths.data_dir: what data=medium reads (conf/data/medium.yaml)


def check_data_paths(cfg: DictConfig, hydra: DictConfig | None = None) -> None:
    """Raise ``ConfigError`` naming the key for a data path that names no file, e.g.
    ``data.train.path=/home/me/nonexistent: no such file or directory; ...``. ``hydra`` (the run's
    Hydra config; else ``cfg.hydra`` where the config has one) tells whether data=medium chose it.
    Null and non-string values are left to the single-key rules (config/rules.py). A sweep that
    sweeps a data or paths key is not checked on its shared config (whose swept keys hold their
    defaults): each job checks its own values."""
    hydra = hydra if hydra is not None else cfg.get("hydra") if isinstance(cfg, DictConfig) else None
    if _sweeps_data(hydra):
        return
    for key in DATA_PATH_KEYS:
        source = OmegaConf.select(cfg, key, throw_on_missing=False)
        if not isinstance(source, str) or not source.strip():
            continue
        try:
            resolve_files(source)
        except SourceError as err:
            raise ConfigError(f"{key}={source}: {err.problem}{_hint(cfg, hydra, key, source, err)}") from None


def _hint(cfg: DictConfig, hydra: DictConfig | None, key: str, source: str, err: SourceError) -> str:
    if err.problem != "no such file or directory":
        return ""  # the problem says what is wrong with what is there
    if key == "data.train.path" and _medium(cfg, hydra, source):
        return (f"; data=medium reads the stories scripts/import_medium.py writes: run "
                f"python scripts/import_medium.py <export.zip> --out {_shown(source)} first")
    return f"; expected {VALID_SOURCE}"


def _sweeps_data(hydra: DictConfig | None) -> bool:
    """The overrides sweep a data or paths key, or the data group (``data.train.path=a,b``)."""
    overrides = OmegaConf.select(hydra, "overrides.task", default=None) if hydra is not None else None
    if not overrides:
        return False
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    except Exception:  # Hydra parsed them already; a form it takes that this cannot: check as usual
        return False
    return any(o.is_sweep_override() and o.key_or_group.split(".")[0] in ("data", "paths") for o in parsed)


def _medium(cfg: DictConfig, hydra: DictConfig | None, source: str) -> bool:
    """data=medium chose the corpus, or the path is the folder it reads by default."""
    if hydra is not None and OmegaConf.select(hydra, "runtime.choices.data", default=None) == "medium":
        return True
    data_dir = OmegaConf.select(cfg, "paths.data_dir", default=None)
    if not isinstance(data_dir, str):
        return False
    return _absolute(source) == _absolute(str(Path(data_dir) / MEDIUM_FOLDER))


def _absolute(path: str) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(path)))


def _shown(source: str) -> str:
    """The folder as the user would type it here: relative to the current directory when inside it."""
    path = _absolute(source)
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel
