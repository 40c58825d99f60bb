"""The own-data commands of README.md and docs/*.md, pasted into bash as written, `~` paths included.

Every ``python train.py`` / ``python scripts/import_medium.py`` line of their bash blocks that
reads your files (a ``~/`` corpus or checkpoint, the Medium import, ``data=medium``) runs in bash
with HOME pointing at a temporary folder that holds such files, in a scratch project root of its
own (its own data/ and outputs/: the import writes its ``data/my_articles``, not the checkout's).
Training commands get fast settings appended (a tiny model, a few steps, no W&B). The other
commands of the docs are tested in tests/test_docs_commands.py.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT
from test_docs_commands import documented_commands, fast_settings, is_own_data, overrides_of, runs_here, scratch_project
from test_medium import STORIES

FAST = ["trainer=debug", "logger=none", "sample.max_new_tokens=4", "model.block_size=16"]
TINY_SHAPE = ["model.embedding_dim=32", "model.num_layers=1", "model.heads=2", "model.head_size=16"]


def readme_commands() -> list[str]:
    """Own-data commands of the README's and docs/' bash blocks (comments cut) that this machine can
    run: no GPU, cluster or hub download."""
    commands = []
    for command in documented_commands():
        words = shlex.split(command)
        if words[1] == "scripts/import_medium.py" or (words[1] == "train.py" and is_own_data(words)
                                                      and runs_here(words)):
            commands.append(command)
    return commands


def make_home(home: Path) -> None:
    """The folders and files the README's commands name, under ``home``."""
    words = (ROOT / "data" / "train.txt").read_text(encoding="utf-8").split()
    parts = [" ".join(words[i : i + 400]) for i in range(0, 2000, 400)]
    for folder, texts in {"articles/train": parts[:3], "articles/val": parts[3:], "my_articles": parts}.items():
        (home / folder).mkdir(parents=True, exist_ok=True)
        for i, t in enumerate(texts):
            (home / folder / f"part{i}.txt").write_text(t, encoding="utf-8")
    for i, t in enumerate(parts):  # '~/articles/*.md'
        (home / "articles" / f"note{i}.md").write_text(t, encoding="utf-8")
    (home / "Downloads").mkdir()
    with zipfile.ZipFile(home / "Downloads" / "medium-export.zip", "w") as zf:
        for name, html in STORIES.items():
            zf.writestr(name, html)


def tiny_gpt2(path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=32, vocab_size=50257)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)


def test_readme_has_the_own_data_commands():
    commands = readme_commands()
    assert any("data.train.path=~/articles/train" in c for c in commands)
    assert any("'~/articles/*.md'" in c for c in commands)  # the glob stays quoted for the shell
    assert any(c.startswith("python scripts/import_medium.py ~/") for c in commands)
    assert any("model.pretrained=~/" in c for c in commands)


@pytest.mark.slow
def test_readme_own_data_commands_run_as_typed_in_bash(tmp_path):
    root, env = scratch_project(tmp_path)  # HOME empty, `python` is this venv's, no hub
    home = Path(env["HOME"])
    make_home(home)
    outputs = root / "outputs"  # paths.log_dir of the scratch project
    commands = readme_commands()
    commands.sort(key=lambda c: not c.startswith("python scripts/import_medium.py"))  # the import first
    for command in commands:
        extra: list[str] = []
        if command.startswith("python train.py"):
            if "model.pretrained=~/" in command:
                tiny_gpt2(home / re.search(r"model.pretrained=~/(\S+)", command).group(1))
                extra = FAST  # the shape comes from the checkpoint
            else:
                extra = FAST + TINY_SHAPE
            extra = fast_settings(overrides_of(shlex.split(command)), extra)  # the command's own values win
        before = set(outputs.glob("runs/*"))
        proc = subprocess.run(["bash", "-c", " ".join([command, *extra])], cwd=root, env=env, capture_output=True,
                              text=True, timeout=600, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        if command.startswith("python train.py"):
            (run,) = set(outputs.glob("runs/*")) - before
            assert json.loads((run / "metrics.json").read_text())["status"] == "completed", command
            overrides = (run / ".hydra" / "overrides.yaml").read_text()
            if "~/" in command:
                assert "~" not in overrides and str(home) in overrides  # the ~ reached Hydra expanded
        else:
            out = shlex.split(command)[shlex.split(command).index("--out") + 1]
            out_dir = home / out[2:] if out.startswith("~/") else root / out
            assert "2 stories imported" in proc.stdout and any(out_dir.glob("2021-*.txt"))
