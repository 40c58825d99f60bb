"""The README's own-data commands, pasted into bash as written, `~` paths included.

Every ``python train.py`` / ``python scripts/import_medium.py`` line of the README's bash blocks
that names a ``~`` path runs in bash with HOME pointing at a temporary folder that holds such
files. Training commands get fast settings appended (a tiny model, a few steps, no W&B).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, isolated_env
from test_medium import STORIES

FAST = ["trainer=debug", "logger=none", "sample.max_new_tokens=4", "model.block_size=16"]
TINY_SHAPE = ["model.embedding_dim=32", "model.num_layers=1", "model.heads=2", "model.head_size=16"]


def readme_commands() -> list[str]:
    """Own-data commands: lines of ```bash blocks that run our scripts on a ~ path, comments cut."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = [line for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S) for line in block.splitlines()]
    commands = [re.sub(r"\s+#.*$", "", line).strip() for line in lines]
    return [c for c in commands if c.startswith(("python train.py", "python scripts/import_medium.py")) and "~" in c]


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
    env = isolated_env(tmp_path / "home")
    home = Path(env["HOME"])
    make_home(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `python` is this venv's
    env["HF_HUB_OFFLINE"] = "1"
    outputs = tmp_path / "outputs"
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
            extra = [*extra, f"paths.log_dir={outputs}"]
        before = set(outputs.glob("runs/*"))
        proc = subprocess.run(["bash", "-c", " ".join([command, *extra])], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=600, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        if command.startswith("python train.py"):
            (run,) = set(outputs.glob("runs/*")) - before
            assert json.loads((run / "metrics.json").read_text())["status"] == "completed", command
            overrides = (run / ".hydra" / "overrides.yaml").read_text()
            assert "~" not in overrides and str(home) in overrides  # the ~ reached Hydra expanded
        else:
            assert "2 stories imported" in proc.stdout and any((home / "my_articles").glob("2021-*.txt"))
