"""Every command of README.md and docs/*.md, tested as typed.

Each line of a ```bash block that starts with ``python train.py``, ``python generate.py`` or
``python scripts/`` (also after ``&&``; ``\\`` continuations joined, comments cut) is collected from
the files, so a new command is tested without a new test:

- every ``python train.py`` command is composed: bash splits its words (``~`` and ``$USER``
  expanded), train.py's own argv step expands ``key=~/...``, Hydra composes conf/train.yaml for each
  job of a sweep (every value of every swept key, the Optuna search space included), and each
  job's config passes what a run checks before it starts (the config's own ValidateConfig
  callback: the rules, the pretrained shape, the data paths), on a pretend machine that has the
  GPUs, cores, folders and GPT-2 checkpoints the command asks for; every ``python generate.py``
  command composes conf/generate.yaml and passes generate.py's option checks;
- the commands that need no GPU, cluster, hub download or sweep run for real in bash, in a
  scratch project root of their own (its own data/ and outputs/), with fast settings appended
  where they train; the resume, generate and compare commands get real runs and sweeps in place
  of their placeholders (``<run>``, ``<id>``, ...);
- ``python scripts/benchmark.py`` commands go through the script's own argument parser (each
  takes minutes to run);
- the own-data commands (a ``~/`` corpus or checkpoint, the Medium import, ``data=medium``) run in
  tests/test_readme_data_commands.py, with the files they name.

Also here: no command hides in a non-bash fence, every relative link names a file and heading
that exist, an example summary.md table has the columns a sweep writes, and the Medium import
writes the folder data=medium reads.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, isolated_env

from article_gpt.sweeps import plan

ENTRY = ("python train.py", "python generate.py", "python scripts/")
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
PLACEHOLDER = re.compile(r"<[a-z][a-z0-9 _]*>")
# A training command gets these unless it sets the key itself: a tiny model, a few steps, no W&B.
FAST = ["trainer=debug", "logger=none", "sample.max_new_tokens=4", "model.block_size=16",
        "model.embedding_dim=32", "model.num_layers=1", "model.heads=2", "model.head_size=16"]


# ---- collecting the commands ---------------------------------------------------------------------
def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def cut_comment(line: str) -> str:
    """``line`` without its shell comment (a ``#`` after a blank, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def shell_lines(block: str) -> list[tuple[int, str]]:
    """(line offset, command line) of a bash block: continuations joined, comments cut."""
    out, lines, i = [], block.split("\n"), 0
    while i < len(lines):
        start, line = i, cut_comment(lines[i]).rstrip()
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1].rstrip() + " " + cut_comment(lines[i]).strip()
        out.append((start, line.strip()))
        i += 1
    return out


def documented_commands(files: list[Path] | None = None) -> dict[str, list[str]]:
    """Every command of the files' bash blocks -> where it is written (``docs/x.md:12``)."""
    found: dict[str, list[str]] = {}
    for path in files or doc_files():
        text = path.read_text(encoding="utf-8")
        for fence in FENCE.finditer(text):
            if fence[1].strip() != "bash":
                continue
            first = text.count("\n", 0, fence.start(2)) + 1
            for offset, line in shell_lines(fence[2]):
                for part in line.split("&&"):
                    command = part.strip()
                    if command.startswith(ENTRY):
                        where = f"{path.relative_to(ROOT)}:{first + offset}"
                        found.setdefault(command, []).append(where)
    return found


def bash_words(command: str, env: dict[str, str], cwd: Path) -> list[str]:
    """The words bash hands the program for ``command`` as typed (quotes, ``~``, ``$VAR``)."""
    proc = subprocess.run(["bash", "-c", "printf '%s\\0' " + command], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=True)
    return proc.stdout.split("\0")[:-1]


def key_of(arg: str) -> str:
    return arg.partition("=")[0].lstrip("+~")


def overrides_of(words: list[str]) -> list[str]:
    """The Hydra overrides among the words after ``python <script>``."""
    return [w for w in words[2:] if not w.startswith("-")]


def choice(overrides: list[str], key: str) -> str | None:
    return next((o.partition("=")[2] for o in overrides if key_of(o) == key), None)


def is_multirun(words: list[str]) -> bool:
    return bool({"-m", "--multirun"} & set(words)) or choice(overrides_of(words), "hparams_search") is not None


def is_resume(words: list[str]) -> bool:
    return any(key_of(o) in ("resume", "resume_sweep") for o in overrides_of(words))


def is_own_data(words: list[str]) -> bool:
    """Reads your files: a ``~/`` corpus or checkpoint, the Medium import, or its folder (data=medium)."""
    if words[1] == "scripts/import_medium.py":
        return True
    overrides = overrides_of(words)
    return choice(overrides, "data") == "medium" or any(
        key_of(o).startswith(("data.", "model.pretrained")) and "~/" in o for o in overrides)


def runs_here(words: list[str]) -> bool:
    """A single train.py run this machine can do in seconds: no GPU, cluster, sweep or hub download."""
    overrides = overrides_of(words)
    if is_multirun(words) or choice(overrides, "hydra/launcher") is not None:
        return False
    if choice(overrides, "trainer") not in (None, "cpu", "debug") or choice(overrides, "trainer.accelerator"):
        return False
    hub = (choice(overrides, "experiment") or "").startswith("finetune") or (
        choice(overrides, "model") or "").endswith("_pretrained")
    local = (choice(overrides, "model.pretrained") or "").startswith(("~/", "/", "./"))
    return local or not hub


def fast_settings(overrides: list[str], extra: list[str] = FAST) -> list[str]:
    """The fast settings the command does not set itself (a run with its own shape keeps it)."""
    keys = {key_of(o) for o in overrides}
    return [o for o in extra if key_of(o) not in keys]


# ---- a scratch project root ------------------------------------------------------------------------
def scratch_project(base: Path) -> tuple[Path, dict[str, str]]:
    """A project root of its own at ``base/project`` (entry points, conf/ and scripts/ linked, data/
    with the bundled articles, its own outputs/), and the environment a user's shell would have:
    an empty HOME, this venv's ``python`` first on PATH, no network for the hub."""
    root = base / "project"
    (root / "data").mkdir(parents=True)
    for name in ("train.py", "generate.py", "conf", "scripts"):
        (root / name).symlink_to(ROOT / name)
    for name in ("train.txt", "val.txt"):
        (root / "data" / name).symlink_to(ROOT / "data" / name)
    env = isolated_env(base / "home")
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", HF_HUB_OFFLINE="1",
               ARTICLE_GPT_ROOT=str(root), USER=env.get("USER") or "me")
    return root, env


def run_in_bash(command: str, root: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def failure(command: str, proc: subprocess.CompletedProcess, where: list[str]) -> str:
    return f"{' '.join(where)}: {command}\nexit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


COMMANDS = documented_commands()
TRAIN = [c for c in COMMANDS if c.startswith("python train.py")]


def command_id(command: str) -> str:
    return command.removeprefix("python ")[:120]


# ---- what the docs hold -----------------------------------------------------------------------------
def test_the_docs_hold_commands_of_every_kind():
    kinds = {c.split()[1] for c in COMMANDS}
    assert {"train.py", "generate.py", "scripts/import_medium.py", "scripts/compare_runs.py",
            "scripts/benchmark.py"} <= kinds
    assert any(where.startswith("docs/") for places in COMMANDS.values() for where in places)
    assert "python train.py" in COMMANDS  # the first screen's `pip install -e . && python train.py`


def test_no_command_hides_outside_a_bash_block():
    """A command in a ```sh, ```console or bare fence would escape these tests: they must be ```bash."""
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        for fence in FENCE.finditer(text):
            if fence[1].strip() != "bash":
                stray = [line for line in fence[2].splitlines() if line.strip().startswith(ENTRY)]
                assert not stray, f"{path.relative_to(ROOT)}: commands in a ```{fence[1]} block: {stray}"


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file (outside code blocks)."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    headings = re.findall(r"^#+ (.+)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_point_to_files_and_headings():
    """Every relative link of the README and docs/ names a file that exists, and a heading in it."""
    for path in doc_files():
        text = FENCE.sub("", path.read_text(encoding="utf-8"))
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.endswith(".png"):
                continue  # a URL, or the image a sweep's summary.md shows
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            assert linked.exists(), f"{path.relative_to(ROOT)}: {target}: no such file"
            if anchor:
                assert anchor in heading_anchors(linked), f"{path.relative_to(ROOT)}: {target}: no such heading"


def test_every_command_has_a_test(tmp_path):
    """Each command is composed, run, or parsed by one of the tests here or in
    test_readme_data_commands.py; a script no test knows fails here."""
    env = isolated_env(tmp_path / "home")
    for command, where in COMMANDS.items():
        words = bash_words(PLACEHOLDER.sub("x", command), env, tmp_path)
        script = words[1]
        assert script in ("train.py", "generate.py", "scripts/import_medium.py", "scripts/compare_runs.py",
                          "scripts/wandb_workspace.py", "scripts/benchmark.py"), \
            f"{where}: no test runs {script}: add one to {__file__}"


def test_summary_tables_have_the_columns_a_sweep_writes():
    """An example summary.md table in the docs has the columns summary.markdown_table writes today."""
    from article_gpt.sweeps.summary import markdown_table

    columns = [c.strip() for c in markdown_table([]).splitlines()[0].strip("|").split("|")]
    tables = 0
    for path in doc_files():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("| job |"):
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                cells = [cells[0], *cells[cells.index(columns[1]):]]  # the swept keys come between
                cells = [c for c in cells if c != "error"]  # the error column only when a job failed
                assert cells == columns, f"{path.relative_to(ROOT)}: {line}"
                tables += 1
    assert tables >= 1


def test_the_medium_path_is_one_folder():
    """The import writes where data=medium reads: data/my_articles, in the docs, the config and --help."""
    from omegaconf import OmegaConf

    imports = [c for c in COMMANDS if c.startswith("python scripts/import_medium.py")]
    assert imports and all(c.endswith("--out data/my_articles") for c in imports), imports
    assert "python train.py data=medium" in COMMANDS
    medium = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "data" / "medium.yaml"))
    assert medium["train"]["path"] == "${paths.data_dir}/my_articles"
    paths = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "paths" / "default.yaml"))
    assert paths["data_dir"] == "${paths.root_dir}/data"
    help_text = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_medium.py"), "--help"],
                               capture_output=True, text=True, check=True, timeout=60).stdout
    assert "--out data/my_articles" in help_text


# ---- composed: every train.py command ---------------------------------------------------------------
@functools.cache
def train_entry():
    """train.py as a module (its argv steps), loaded once without running it."""
    before = os.environ.get("ARTICLE_GPT_ROOT")
    spec = importlib.util.spec_from_file_location("train_entry", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if before is None:  # train.py sets it for its own process
        os.environ.pop("ARTICLE_GPT_ROOT", None)
    return module


def sweep_values(override) -> list[str]:
    """Every value a sweep override gives its key (an interval: both ends)."""
    if override.is_interval_sweep():
        interval = override.value()
        ends = [interval.start, interval.end]
        return [str(int(v)) if "int" in interval.tags else repr(float(v)) for v in ends]
    return list(override.sweep_string_iterator())


def expand(overrides: list[str]) -> list[list[str]]:
    """The jobs of a sweep, as override lists: every value of every swept key appears in one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    values = [[o.input_line] if not o.is_sweep_override() else
              [f"{o.get_key_element()}={v}" for v in sweep_values(o)] for o in parsed]
    n = max((len(v) for v in values), default=1)
    return [[v[i % len(v)] for v in values] for i in range(n)]


GPT2_SHAPES = {"gpt2": (768, 12, 12), "gpt2-medium": (1024, 24, 16), "gpt2-large": (1280, 36, 20)}


@pytest.fixture
def pretend_machine(tmp_path, monkeypatch):
    """A machine that has what the commands ask for: CUDA GPUs, an Apple GPU, 8 cores, writable
    folders, GPT-2's config.json for any checkpoint they name (by hub or folder name; gpt2's for
    any other folder), and the files they read: the own-data files under HOME
    (test_readme_data_commands.make_home) and data/my_articles in a scratch project root.
    Returns (the project root, the environment)."""
    import torch
    from test_readme_data_commands import make_home

    from article_gpt.config import machine
    from article_gpt.model import pretrained

    root, env = scratch_project(tmp_path)
    make_home(Path(env["HOME"]))
    (root / "data" / "my_articles").symlink_to(Path(env["HOME"]) / "my_articles")
    monkeypatch.setenv("HOME", env["HOME"])  # train.py's expand_home and the data paths read it
    monkeypatch.setenv("ARTICLE_GPT_ROOT", str(root))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(machine, "check_writable", lambda key, value, folder: None)

    def hf_config(source: str) -> dict:
        width, layers, heads = GPT2_SHAPES.get(Path(str(source)).name, GPT2_SHAPES["gpt2"])
        return {"model_type": "gpt2", "n_embd": width, "n_layer": layers, "n_head": heads, "n_positions": 1024,
                "vocab_size": 50257, "activation_function": "gelu_new"}

    monkeypatch.setattr(pretrained, "read_hf_config", hf_config)
    return root, env


def compose_jobs(words: list[str]) -> list:
    """The composed config of every job the command starts (with Hydra's part)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    overrides = overrides_of(words)
    unknown = [w for w in words[2:] if w.startswith("-") and w not in ("-m", "--multirun")]
    assert not unknown, f"flags this test does not know: {unknown}"
    configs = []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for job in expand(overrides):
            cfg = compose("train", overrides=job, return_hydra_config=True)
            space = OmegaConf.select(cfg, "hydra.sweeper.params") if is_multirun(words) else None
            given = {key_of(o) for o in overrides}
            searched = [f"{k}={v}" for k, v in (space or {}).items() if key_of(k) not in given]
            if not searched:
                configs.append(cfg)
                continue
            for trial in expand([*job, *searched]):  # the search space's every value, at least once
                configs.append(compose("train", overrides=trial, return_hydra_config=True))
    return configs


def check_before_start(cfg) -> None:
    """What a run checks before it starts: the config's own ValidateConfig callback (the rules,
    the pretrained shape, the data paths) as Hydra calls it."""
    from hydra.utils import instantiate

    instantiate(cfg.hydra.callbacks.validate_config).on_run_start(config=cfg)


@pytest.mark.parametrize("command", [c for c in TRAIN if "resume" not in c], ids=command_id)
def test_train_command_composes_and_passes_the_rules(command, pretend_machine, capsys):
    """Each job of the command, as Hydra composes it, passes the checks a run makes before it
    starts (the resume commands are run below: they need the run they name)."""
    root, env = pretend_machine
    words = bash_words(PLACEHOLDER.sub("2026-01-01_00-00-00-abc123", command), env, root)
    entry = train_entry()  # train.py's own `~` step (or the module it hands it to)
    expand_home = getattr(entry, "expand_home", None) or importlib.import_module(
        "article_gpt.recovery.argv").expand_home
    words = ["python", *expand_home(words[1:])]
    words = ["python", *plan.split_flag(words[1:])[0]]  # plan=: read before Hydra, as train.py does
    assert not any(o.partition("=")[2].startswith("~/") for o in overrides_of(words)), words  # expanded
    try:
        configs = compose_jobs(words)
    except Exception as err:
        raise AssertionError(f"{' '.join(COMMANDS[command])}: {command}: Hydra cannot compose it: {err}") from None
    assert configs, command
    for cfg in configs:
        try:
            check_before_start(cfg)
        except (Exception, SystemExit) as err:
            job = " ".join(cfg.hydra.overrides.task)
            raise AssertionError(f"{' '.join(COMMANDS[command])}: {command}\njob {job}: {err!r}\n"
                                 f"{capsys.readouterr().err[-2000:]}") from None


@pytest.mark.parametrize("command", [c for c in TRAIN if "plan=true" in c], ids=command_id)
def test_plan_commands_run_as_typed(command, tmp_path):
    """A plan prints its jobs and their cost, trains nothing and writes no outputs folder."""
    root, env = scratch_project(tmp_path)
    proc = run_in_bash(command, root, env)
    assert proc.returncode == 0, failure(command, proc, COMMANDS[command])
    assert "nothing was trained" in proc.stdout and not (root / "outputs").exists(), proc.stdout[-2000:]


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith("python generate.py")], ids=command_id)
def test_generate_command_composes_and_passes_the_rules(command, tmp_path):
    """Each generate.py command, as Hydra composes conf/generate.yaml, passes generate.py's own
    option checks (it runs for real, on a trained checkpoint, below)."""
    from hydra import compose, initialize_config_dir

    from article_gpt.config.rules import validate_generate

    words = bash_words(PLACEHOLDER.sub("x", command), isolated_env(tmp_path / "home"), tmp_path)
    assert not [w for w in words[2:] if w.startswith("-")], command
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        try:
            validate_generate(compose("generate", overrides=words[2:]))
        except Exception as err:
            raise AssertionError(f"{' '.join(COMMANDS[command])}: {command}: {err!r}") from None


# ---- run: the single runs this machine can do ------------------------------------------------------
def single_runs(env: dict[str, str], cwd: Path) -> list[str]:
    out = []
    for command in TRAIN:
        words = bash_words(PLACEHOLDER.sub("x", command), env, cwd)
        if runs_here(words) and not is_resume(words) and not is_own_data(words):
            out.append(command)
    return out


def new_run(outputs: Path, before: set[Path]) -> Path:
    (run,) = set(outputs.glob("runs/*")) - before
    return run


@pytest.mark.slow
def test_single_run_commands_run_as_typed(tmp_path):
    """Every single run on the CPU (not a sweep, no GPU, no hub): as typed, plus fast settings."""
    root, env = scratch_project(tmp_path)
    commands = single_runs(env, root)
    assert "python train.py" in commands and "python train.py debug=fast" in commands
    errors = []
    for command in commands:
        words = bash_words(command, env, root)
        before = set((root / "outputs").glob("runs/*"))
        proc = run_in_bash(" ".join([command, *fast_settings(overrides_of(words))]), root, env)
        if proc.returncode != 0:
            errors.append(failure(command, proc, COMMANDS[command]))
            continue
        metrics = json.loads((new_run(root / "outputs", before) / "metrics.json").read_text())
        if metrics["status"] != "completed":
            errors.append(f"{COMMANDS[command]}: {command}: status {metrics['status']}")
    assert not errors, "\n\n".join(errors)


# ---- run: resume, generate, compare, with real runs in place of the placeholders ----------------------
class Workspace:
    """A scratch project whose outputs hold what the placeholders name: runs (``<run>``, ``<a>``,
    ``<b>``) and sweeps (``<id>``, ``<id1>``, ``<id2>``), each made with the fast settings."""

    def __init__(self, base: Path) -> None:
        self.root, self.env = scratch_project(base)
        self.outputs = self.root / "outputs"
        (self.root / "prompts.txt").write_text("Backpropagation is\nThe perceptron\n", encoding="utf-8")
        self.runs = [self.train(), self.train("seed=1")]
        # the first logs to (offline) W&B: scripts/wandb_workspace.py builds its view
        self.sweeps = [self.sweep("model.heads=2,4", "logger=wandb"), self.sweep("model.heads=1,2")]

    def python(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL)
        return proc

    def train(self, *overrides: str) -> Path:
        before = set(self.outputs.glob("runs/*"))
        proc = self.python("train.py", *overrides, *FAST)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return new_run(self.outputs, before)

    def interrupted(self) -> Path:
        """A run stopped by SIGTERM at step 2 of 6 (tests/interrupt_at.py): what resume= continues."""
        before = set(self.outputs.glob("runs/*"))
        proc = self.python(str(ROOT / "tests" / "interrupt_at.py"), "2", "SIGTERM", *FAST)
        assert proc.returncode == 143, proc.stderr[-2000:]
        run = new_run(self.outputs, before)
        assert json.loads((run / "metrics.json").read_text())["status"] == "interrupted"
        return run

    def sweep(self, *overrides: str) -> Path:
        before = set(self.outputs.glob("sweeps/*"))
        proc = self.python("train.py", "-m", *fast_settings(list(overrides)), *overrides)
        assert proc.returncode == 0, proc.stderr[-2000:]
        (sweep,) = set(self.outputs.glob("sweeps/*")) - before
        return sweep

    def fill(self, command: str) -> str:
        """The command with real names for its placeholders; a run to resume is a fresh interrupted one."""
        run = self.interrupted() if "resume=" in command else self.runs[0]
        names = {"<run>": run.name, "<a>": self.runs[0].name, "<b>": self.runs[1].name,
                 "<id>": self.sweeps[0].name, "<id1>": self.sweeps[0].name, "<id2>": self.sweeps[1].name}
        unknown = set(PLACEHOLDER.findall(command)) - names.keys()
        assert not unknown, f"{COMMANDS[command]}: no test knows what {unknown} stands for in {command}"
        return PLACEHOLDER.sub(lambda m: names[m[0]], command)


def workspace_commands() -> list[str]:
    out = []
    for command in COMMANDS:
        words = PLACEHOLDER.sub("x", command).split()
        if words[1] in ("generate.py", "scripts/compare_runs.py", "scripts/wandb_workspace.py") or (
                words[1] == "train.py" and any(w.startswith(("resume=", "resume_sweep=")) for w in words)):
            out.append(command)
    return out


@pytest.mark.slow
def test_resume_generate_and_compare_commands_run_as_typed(tmp_path):
    """The commands that act on runs and sweeps, on real ones: each must exit 0, and each resume
    must end with a completed run."""
    commands = workspace_commands()
    assert any("resume=latest" in c for c in commands) and any("resume_sweep=" in c for c in commands)
    assert any(c.startswith("python generate.py") for c in commands)
    assert any(c.startswith("python scripts/compare_runs.py") for c in commands)
    assert any(c.startswith("python scripts/wandb_workspace.py") for c in commands)
    ws = Workspace(tmp_path)
    errors = []
    for command in commands:
        typed = ws.fill(command)
        if "resume=" in command:  # the runs' records before it (comparisons/ holds none)
            before = {p: p.read_text() for p in ws.outputs.glob("runs/*/metrics.json")}
        proc = run_in_bash(typed, ws.root, ws.env)
        if proc.returncode != 0:
            errors.append(failure(typed, proc, COMMANDS[command]))
        elif "resume=" in command:
            changed = [p.parent for p, text in before.items() if p.read_text() != text]
            statuses = [json.loads((p / "metrics.json").read_text())["status"] for p in changed]
            if statuses != ["completed"] or set(ws.outputs.glob("runs/*/metrics.json")) != set(before):
                errors.append(f"{COMMANDS[command]}: {typed}: resumed {changed} -> {statuses}")
    assert not errors, "\n\n".join(errors)
    assert (ws.root / "texts.txt").is_file()  # out=texts.txt, relative to where the command runs


# ---- parsed: the benchmarks ------------------------------------------------------------------------
def test_benchmark_commands_parse(tmp_path):
    """Each `python scripts/benchmark.py` command is accepted by the script's own parser, and each
    model it names is a preset (a run takes minutes)."""
    spec = importlib.util.spec_from_file_location("benchmark_entry", ROOT / "scripts" / "benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    env = isolated_env(tmp_path / "home")
    presets = {p.stem for p in (ROOT / "conf" / "model").glob("*.yaml")}
    commands = [c for c in COMMANDS if c.startswith("python scripts/benchmark.py")]
    assert commands
    for command in commands:
        words = bash_words(command.replace("PATH", str(tmp_path / "path")), env, tmp_path)
        try:
            args = bench.build_parser().parse_args(words[2:])
        except SystemExit as err:
            raise AssertionError(f"{' '.join(COMMANDS[command])}: {command}: rejected (exit {err.code})") from None
        named = [getattr(args, "model", None), *(getattr(args, "presets", None) or "").split(",")]
        assert {n for n in named if n} <= presets, f"{' '.join(COMMANDS[command])}: {command}"
