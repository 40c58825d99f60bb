"""Bad input: one line naming the key, value or file and what would be valid, a non-zero exit,
no traceback, and nothing that could pass for a finished run (a config error: no run directory).

Most cases are pure validation and run in-process, through the same functions train.py's
``ValidateConfig`` Hydra callback and generate.py call. A few run the real entry points, to show
the wiring: the one line, the exit status, what is (not) left on disk, and that a config error
is reported before torch loads. Cases already tested elsewhere are not repeated here:
tests/test_config.py (range rules), test_data.py (missing/empty/non-UTF-8 files, empty dir,
glob without match, short splits), test_generate.py (missing, corrupted, foreign, pickled and
other-architecture checkpoints; CLI ranges), test_train.py (finished run dir), test_resume.py
(resume= of a non-run, changed keys), test_optuna.py (search space with an unknown key),
test_budget.py (budget.* <= 0 or not a number).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException

from article_gpt.config.machine import check_writable
from article_gpt.config.rules import validate, validate_generate
from article_gpt.data import token_cache
from article_gpt.data.corpus import TextDataModule, read_documents, tokenize_documents
from article_gpt.data.files import resolve_files
from article_gpt.errors import CheckpointError, ConfigError, DataError, hydra_error_line
from article_gpt.generation import prepare_out, read_prompts
from article_gpt.model.checkpoint import FORMAT, FORMAT_KEY, load_model
from article_gpt.model.gpt import GPT, GPTConfig

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def compose_cfg(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides), return_hydra_config=name == "train")


def one_line(message: str, pattern: str) -> None:
    assert "\n" not in message, message
    assert re.match(pattern, message), f"{message!r} does not match {pattern!r}"


# ---- config: wrong types everywhere, devices, budgets, keys added with + ------------------------
TRAIN = {  # override(s) -> the start of the one line (a regex)
    "seed=abc": r"seed=abc: must be an integer",
    "tokenizer=[a,b]": r"tokenizer=\['a', 'b'\]: must be a non-empty string",
    "compile=maybe": r"compile=maybe: must be true or false",
    "tf32=1": r"tf32=1: must be true or false",
    "tags=abc": r"tags=abc: must be a list of strings",
    "model.heads=[1,2]": r"model\.heads=\[1, 2\]: must be a positive integer",  # a list for a scalar
    "dataloader.batch_size=abc": r"dataloader\.batch_size=abc: must be a positive integer",  # a string for a number
    "model.dropout=abc": r"model\.dropout=abc: must be a number in \[0\.0, 1\.0\)",
    "model.bias=maybe": r"model\.bias=maybe: must be true or false",
    "dataloader.shuffle=yes": r"dataloader\.shuffle=yes: must be true or false",
    "optim.betas=0.9": r"optim\.betas=0\.9: must be two numbers in \[0, 1\)",
    "optim.betas=[0.9,1.5]": r"optim\.betas=\[0\.9, 1\.5\]: must be two numbers",
    "optim.lr=fast": r"optim\.lr=fast: must be a number in \(0\.0, 10\.0\]",
    "sample.prompt=[a,b]": r"sample\.prompt=\['a', 'b'\]: must be a string",
    "sample.seed=1.5": r"sample\.seed=1\.5: must be an integer",
    "trainer.max_steps=abc": r"trainer\.max_steps=abc: must be a positive integer, -1 or null",
    "trainer.accelerator=tpu2": r"trainer\.accelerator=tpu2: must be one of auto, cpu, gpu",
    "trainer.devices=abc": r"trainer\.devices=abc: must be a positive integer, -1, auto or a list",
    "trainer.gradient_clip_val=-1": r"trainer\.gradient_clip_val=-1: must be a number in \[0\.0, inf\]",
    "trainer.log_every_n_steps=0": r"trainer\.log_every_n_steps=0: must be a positive integer or null",
    "trainer=debug trainer.limit_train_batches=1.5": r"trainer\.limit_train_batches=1\.5: must be an integer >= 0",
    "trainer.num_sanity_val_steps=-2": r"trainer\.num_sanity_val_steps=-2: must be an integer >= -1",
    "trainer.deterministic=maybe": r"trainer\.deterministic=maybe: must be true, false or warn",
    "callbacks.early_stopping.patience=-1": r"callbacks\.early_stopping\.patience=-1: must be an integer >= 0",
    "logger.wandb.init_timeout=0": r"logger\.wandb\.init_timeout=0: must be a number in \(0\.0, inf\]",
    f"trainer.devices={CORES + 1}": rf"trainer\.devices={CORES + 1}: this machine gives this job {CORES} CPU cores; "
                                    rf"use at most trainer\.devices={CORES}",
    f"trainer=ddp trainer.devices={CORES + 2}": rf"trainer\.devices={CORES + 2}: this machine gives this job {CORES}",
    # + keys: something must read them (before, +resume=... trained from scratch in silence and
    # +model.<typo> crashed with a raw TypeError)
    "+model.foo=1": r"\+model\.foo=1: not read by anything; model \(GPTConfig\) takes bias, .* and \d+ more",
    "+trainer.max_step=5": r"\+trainer\.max_step=5: not read by anything; trainer \(Trainer\) takes max_steps.*"
                           r"\(did you mean max_steps\?\)",
    "+callbacks.model_checkpoint.every_n_epoch=2": r"\+callbacks\.model_checkpoint\.every_n_epoch=2: .*ModelCheckpoint"
                                                   r".*did you mean every_n_epochs",
    "+data.train.limit=3": r"\+data\.train\.limit=3: not read by anything; data\.train \(SplitConfig\) takes",
    "+optim.momentum=0.9": r"\+optim\.momentum=0\.9: not read by anything; optim \(OptimConfig\) takes",
    "+foo=1": r"\+foo=1: not read by anything; set an existing key",
    "+logger.wandb.notes=hi": r"\+logger\.wandb\.notes=hi: not read by anything",
    "+logger.mlflow={}": r"logger\.mlflow: unknown logger; known: wandb, csv, tensorboard",
    "+paths.scratch=/tmp": r"\+paths\.scratch=/tmp: not read by anything",
}


@pytest.mark.all_cores  # CORES: the machine's cores, as validate() sees them
@pytest.mark.parametrize("overrides", TRAIN)
def test_bad_train_config_is_one_line(overrides):
    cfg = compose_cfg("train", *overrides.split())
    with pytest.raises(ConfigError) as err:
        validate(cfg, hydra=cfg.hydra)
    one_line(str(err.value), TRAIN[overrides])


@pytest.mark.parametrize("overrides", [
    "+trainer.fast_dev_run=true", "+trainer.limit_val_batches=2", "+callbacks.model_checkpoint.every_n_epochs=1",
    "+callbacks.lr={_target_:lightning.pytorch.callbacks.LearningRateMonitor}", "+logger.csv={}",
    "debug=fast", f"trainer=ddp trainer.devices={CORES}", "trainer.devices=auto",
])
@pytest.mark.all_cores
def test_keys_and_values_that_are_read_are_accepted(overrides):
    cfg = compose_cfg("train", *overrides.split())
    validate(cfg, hydra=cfg.hydra)


# ---- Hydra's own errors: one line instead of a page with the config search path ----------------
HYDRA = {
    "hydra/launcher=nope": r"hydra/launcher=nope: no such option in conf/hydra/launcher/; available: basic, joblib",
    "hparams_search=nope": r"hparams_search=nope: no such option in conf/hparams_search/; available: optuna",
    "model=nope": r"model=nope: no such option in conf/model/; available: .*tiny",
    "model.foo=1": r"model\.foo: no such key in the config; a new key is added with \+model\.foo=",
    "+seed=3": r"\+seed: seed is already in the config; set it without the \+: seed=",
    "model.heads=[1,": r"model\.heads=\[1,: not a valid override \(no viable alternative",
}


@pytest.mark.parametrize("override", HYDRA)
def test_hydra_composition_error_is_one_line(override):
    with pytest.raises(HydraException) as err:
        compose_cfg("train", override)
    one_line(hydra_error_line(err.value), HYDRA[override])


# ---- the entry points: exit status, stderr, what is left on disk, what was imported -----------------
def run(script: str, *args: str, env: dict, python: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *python, str(ROOT / script), *args], cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


def assert_refused(proc: subprocess.CompletedProcess, pattern: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    one_line(lines[0], "error: " + pattern)


def leftover_runs(outputs: Path) -> list[Path]:
    return [p for p in (outputs / "runs").iterdir()] if (outputs / "runs").exists() else []


@pytest.mark.parametrize("args, pattern", [
    (["model.heads=0"], r"model\.heads=0: must be a positive integer$"),
    (["hydra/launcher=nope"], r"hydra/launcher=nope: no such option"),
    (["+resume_from=outputs/runs/x"], r"\+resume_from=outputs/runs/x: not read by anything"),
    (["-m", "model.heads=0", "seed=1,2"], r"model\.heads=0: must be a positive integer$"),  # before any job
])
def test_train_config_error_leaves_nothing_and_loads_no_torch(clean_env, outputs, args, pattern):
    proc = run("train.py", *args, f"paths.log_dir={outputs}", env=clean_env, python=("-X", "importtime"))
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"torch", "lightning", "wandb", "matplotlib"}, "a config error must come before these load"
    proc.stderr = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    assert_refused(proc, pattern)
    assert not outputs.exists() or not leftover_runs(outputs)  # no run dir, not even an empty one
    assert not (outputs / "sweeps").exists()


IMPORTS = """
import sys, tempfile
import article_gpt.training.run
from article_gpt.tracking import loggers as tracking
loggers = tracking.build_loggers({"csv": {}}, tempfile.mkdtemp(), "g", "n", {})
print(sorted(m for m in ("wandb", "tensorboard", "tensorboardX") if m in sys.modules))
"""


@pytest.mark.slow
def test_a_run_imports_only_the_loggers_it_uses(clean_env):
    """W&B and TensorBoard load only with logger=wandb / tensorboard. (matplotlib is not checked:
    torchmetrics, which Lightning imports, loads it whenever it is installed.)"""
    proc = subprocess.run([sys.executable, "-c", IMPORTS], cwd=ROOT, env=clean_env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_hydra_full_error_shows_the_whole_report(clean_env, outputs):
    proc = run("train.py", "hydra/launcher=nope", env={**clean_env, "HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "Available options" in proc.stderr


def test_generate_hydra_error_is_one_line(clean_env):
    assert_refused(run("generate.py", "nucleus=0.9", env=clean_env), r"nucleus: no such key in the config")


@pytest.mark.parametrize("script, args, pattern", [
    ("train.py", ["model.hedas=4"], r"model\.hedas: no such key in the config; did you mean model\.heads\? "
                                    r"\(a new key is added with \+model\.hedas=\.\.\. where something reads it\)$"),
    ("train.py", ["modle.heads=4"], r"modle\.heads: no such key in the config; did you mean model\.heads\?"),
    ("train.py", ["heads=4"], r"heads: no such key in the config; did you mean model\.heads\?"),  # at another level
    ("train.py", ["model=small", "trainer.max_step=3"], r"trainer\.max_step: .*; did you mean trainer\.max_steps\?"),
    ("generate.py", ["temprature=0"], r"temprature: no such key in the config; did you mean temperature\? "),
    # nothing close: no guess, the line as before
    ("train.py", ["model.foo=1"], r"model\.foo: no such key in the config; a new key is added with \+model\.foo=\.\.\. "
                                  r"where something reads it$"),
    ("generate.py", ["nucleus=0.9"], r"nucleus: no such key in the config; a new key is added with \+nucleus="),
])
def test_unknown_key_suggests_the_nearest_valid_one(run_cli, outputs, script, args, pattern):
    """The real entry points: the composed config's keys (groups as chosen) give the nearest one."""
    assert_refused(run_cli(script, *args, check=False), pattern)
    assert not leftover_runs(outputs)


def data_path_cases(tmp_path: Path, home: str) -> dict[str, tuple[list[str], str]]:
    (tmp_path / "pdfs").mkdir()
    (tmp_path / "pdfs" / "paper.pdf").write_bytes(b"%PDF-1.4")
    tmp, root = re.escape(str(tmp_path)), re.escape(str(ROOT))
    missing = r": no such file or directory; expected a file, a directory of \.txt/\.md files or a glob$"
    medium = (r"/my_articles: no such file or directory; data=medium reads the stories scripts/import_medium\.py "
              r"writes: run python scripts/import_medium\.py <export\.zip> --out {} first$")
    return {  # train.py expands the ~ (as bash would for a path) to the HOME of the test's environment
        "train": (["data.train.path=~/nonexistent"], rf"data\.train\.path={re.escape(home)}/nonexistent{missing}"),
        "val": ([f"data.val.path={tmp_path}/missing.txt"], rf"data\.val\.path={tmp}/missing\.txt{missing}"),
        "no_text": ([f"data.train.path={tmp_path}/pdfs"],
                    rf"data\.train\.path={tmp}/pdfs: directory holds no \.txt/\.md files$"),
        "glob": ([f"data.train.path={tmp_path}/*.txt"], rf"data\.train\.path={tmp}/\*\.txt: glob matches no files$"),
        "medium": (["data=medium", f"paths.data_dir={tmp_path}"],
                   rf"data\.train\.path={tmp}" + medium.format(f"{tmp}/my_articles")),
        "medium_default": (["data=medium"], rf"data\.train\.path={root}/data" + medium.format("data/my_articles")),
    }


def test_a_sweep_of_data_paths_is_checked_job_by_job(tmp_path):
    """`-m data=medium data.train.path=a,b`: the sweep's shared config holds the default path, which
    need not exist (the jobs read a and b); each job checks its own."""
    from omegaconf import OmegaConf

    from article_gpt.config.paths import check_data_paths

    cfg = compose_cfg("train", "data=medium", f"paths.data_dir={tmp_path}")  # no my_articles there
    for swept in ([f"data.train.path={tmp_path}/a,{tmp_path}/b"], ["paths.data_dir=choice(x,y)"]):
        check_data_paths(cfg, hydra=OmegaConf.create({"overrides": {"task": ["data=medium", *swept]}}))
    with pytest.raises(ConfigError, match=r"^data\.train\.path=.*/my_articles: no such file"):  # not swept: checked
        check_data_paths(cfg, hydra=OmegaConf.create({"overrides": {"task": ["data=medium", "seed=1,2"]}}))
    with pytest.raises(ConfigError, match=r"^data\.train\.path=.*/my_articles: no such file"):  # a single run
        check_data_paths(cfg)


@pytest.mark.parametrize("case", ["train", "val", "no_text", "glob", "medium", "medium_default"])
def test_data_path_error_names_its_key_before_torch(clean_env, outputs, tmp_path, case):
    """A data path that names no text is a config error: one line naming the key, before torch and
    Lightning load (well under a second, not the seconds they take), and no run dir."""
    if case == "medium_default" and (ROOT / "data" / "my_articles").exists():
        pytest.skip("data/my_articles exists in this checkout: data=medium has its stories")
    (tmp_path / "data").mkdir()
    args, pattern = data_path_cases(tmp_path / "data", clean_env["HOME"])[case]
    proc = run("train.py", *args, f"paths.log_dir={outputs}", env=clean_env, python=("-X", "importtime"))
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"torch", "lightning", "wandb", "matplotlib"}, "a data path error must come before these load"
    proc.stderr = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    assert_refused(proc, pattern)
    assert not leftover_runs(outputs)  # no run dir, not even an empty one


@pytest.mark.slow
def test_train_data_error_leaves_no_run_dir(clean_env, outputs, tmp_path):
    """A data error is found before Hydra makes the run dir as well (torch loads first: seconds)."""
    (tmp_path / "ok.txt").write_text("Some text that is long enough to tokenize. " * 40)
    (tmp_path / "zero.txt").write_bytes(b"")
    proc = run("train.py", f"data.train.path={tmp_path}", f"paths.log_dir={outputs}", env=clean_env)
    assert_refused(proc, re.escape(str(tmp_path / "zero.txt")) + r": file is empty$")
    assert leftover_runs(outputs) == []


# ---- outputs: paths.log_dir where nothing can be written ------------------------------------------
def test_log_dir_under_a_file(clean_env, tmp_path):
    (tmp_path / "file").write_text("")
    proc = run("train.py", f"paths.log_dir={tmp_path / 'file' / 'outputs'}", env=clean_env)
    assert_refused(proc, rf"paths\.log_dir={re.escape(str(tmp_path))}/file/outputs: cannot be written "
                         r"\(Not a directory\); choose a writable folder")


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder even root cannot write into (root ignores chmod; the immutable flag binds it)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.fixture
def full_dir(tmp_path):
    """A folder on a 64 KiB tmpfs that is already full."""
    folder = tmp_path / "full"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with open(folder / "filler", "wb") as f:
            try:
                f.write(b"\0" * 128 * 1024)
            except OSError:
                pass
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("kind", ["read_only_dir", "full_dir"])
def test_log_dir_read_only_or_full(request, kind):
    folder = request.getfixturevalue(kind)
    reason = {"read_only_dir": "Operation not permitted", "full_dir": "No space left on device"}[kind]
    with pytest.raises(ConfigError) as err:
        check_writable("paths.log_dir", folder, folder)
    one_line(str(err.value), rf"paths\.log_dir={re.escape(str(folder))}: cannot be written \({reason}\)")
    assert [p.name for p in folder.iterdir()] == (["filler"] if kind == "full_dir" else [])  # no probe left


# ---- data -------------------------------------------------------------------------------------------
TEXT = "Backpropagation computes gradients layer by layer, from the loss back to the inputs. " * 20


def test_directory_of_only_non_text_files(tmp_path):
    (tmp_path / "paper.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / "figure.png").write_bytes(b"\x89PNG")
    with pytest.raises(DataError) as err:
        resolve_files(str(tmp_path))
    one_line(str(err.value), re.escape(str(tmp_path)) + r": directory holds no \.txt/\.md files")


def test_glob_matching_only_a_directory(tmp_path):
    (tmp_path / "articles.d").mkdir()
    (tmp_path / "articles.d" / "a.txt").write_text(TEXT)
    with pytest.raises(DataError) as err:
        resolve_files(str(tmp_path / "articles.*"))
    one_line(str(err.value), re.escape(str(tmp_path / "articles.*")) + r": glob matches no files")


def test_zero_byte_file_among_good_ones_is_named(tmp_path):
    for name in ("a.txt", "c.txt"):
        (tmp_path / name).write_text(TEXT)
    (tmp_path / "b.txt").write_bytes(b"")
    with pytest.raises(DataError) as err:
        read_documents(str(tmp_path))
    one_line(str(err.value), re.escape(str(tmp_path / "b.txt")) + r": file is empty$")


def test_file_that_changes_or_vanishes_between_runs(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT)
    (tmp_path / "b.txt").write_text(TEXT)
    cache = tmp_path / "cache"
    first = tokenize_documents(read_documents(str(tmp_path)), "gpt2", str(cache)).tolist()
    (tmp_path / "b.txt").write_text(TEXT.replace("gradients", "derivatives"))  # same length in words
    second = tokenize_documents(read_documents(str(tmp_path)), "gpt2", str(cache)).tolist()
    assert second != first and second == tokenize_documents(read_documents(str(tmp_path)), "gpt2", None).tolist()
    (tmp_path / "b.txt").unlink()
    with pytest.raises(DataError):  # gone from a directory: the cache of the old set is never read
        read_documents(str(tmp_path / "b.txt"))
    assert tokenize_documents(read_documents(str(tmp_path)), "gpt2", str(cache)).tolist() == first[:len(
        tokenize_documents(read_documents(str(tmp_path / "a.txt")), "gpt2", None))]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_token_cache_is_rebuilt(tmp_path, caplog, damage):
    (tmp_path / "a.txt").write_text(TEXT)
    cache = tmp_path / "cache"
    good = tokenize_documents(read_documents(str(tmp_path / "a.txt")), "gpt2", str(cache)).tolist()
    (cache_file,) = cache.iterdir()
    data = cache_file.read_bytes()
    cache_file.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                            "garbage": bytes(reversed(data[:-8])) + data[-8:]}[damage])
    again = tokenize_documents(read_documents(str(tmp_path / "a.txt")), "gpt2", str(cache))
    assert again.tolist() == good
    assert "truncated or damaged: tokenizing again" in caplog.text
    assert token_cache.read(cache_file).tolist() == good  # rewritten whole


def test_val_set_shorter_than_one_window(tmp_path):
    (tmp_path / "train.txt").write_text(TEXT)
    (tmp_path / "val.txt").write_text("Too short.")
    dm = TextDataModule(train={"path": str(tmp_path / "train.txt")}, val={"path": str(tmp_path / "val.txt")},
                        block_size=16, cache_dir=None)
    with pytest.raises(DataError) as err:
        dm.setup()
    one_line(str(err.value), re.escape(str(tmp_path / "val.txt")) + r": val split has \d+ tokens, fewer than "
                             r"block_size \+ 1 = 17; lower model\.block_size or add text")


# ---- checkpoints --------------------------------------------------------------------------------
def small_checkpoint(path: Path, **extra) -> Path:
    cfg = GPTConfig(block_size=8, embedding_dim=16, num_layers=1, heads=2, head_size=8)
    model = GPT(cfg)
    torch.save({"hyper_parameters": {"model": cfg.to_dict(), "tokenizer": "gpt2"},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, **extra}, path)
    return path


class RunsCode:
    """Unpickling this would run ``touch <marker>``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = small_checkpoint(tmp_path / "evil.ckpt", callbacks=RunsCode(marker))
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    one_line(str(err.value), re.escape(str(path)) + r": holds pickled Python objects that weights_only=True refuses")
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real: an unsafe load would have run it
    assert marker.exists()


def test_checkpoint_from_a_newer_format(tmp_path):
    assert load_model(small_checkpoint(tmp_path / "now.ckpt", **{FORMAT_KEY: FORMAT})).model.cfg.block_size == 8
    path = small_checkpoint(tmp_path / "future.ckpt", **{FORMAT_KEY: FORMAT + 1})
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    one_line(str(err.value), re.escape(str(path)) + rf": checkpoint format {FORMAT + 1} is newer than this Article "
                             rf"GPT reads \(format {FORMAT} and older\); upgrade article-gpt")


def test_empty_checkpoint_file(tmp_path):
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "empty.ckpt")
    one_line(str(err.value), re.escape(str(tmp_path / "empty.ckpt")) + r": corrupted or not a torch checkpoint")


# ---- generation: every sampling option out of range, prompts -------------------------------------
GENERATE = {
    "max_new_tokens=-1": r"max_new_tokens=-1: must be an integer >= 0",
    "num_samples=0": r"num_samples=0: must be a positive integer",
    "seed=abc": r"seed=abc: must be an integer or null",
    "temperature=inf": r"temperature=inf: must be a number >= 0",
    "temperature=hot": r"temperature=hot: must be a number >= 0",
    "top_k=1.5": r"top_k=1\.5: must be a positive integer or null",
    "top_p=[0.5]": r"top_p=\[0\.5\]: must be a number in \(0, 1\] or null",
    "stop_at_eot=maybe": r"stop_at_eot=maybe: must be true or false",
    "kv_cache=1": r"kv_cache=1: must be true or false",
    "compile=yes": r"compile=yes: must be true or false",
    "device=cuda:x": r"device=cuda:x: must be auto, cpu, cuda or cuda:N",
    "ckpt=null": r"ckpt=None: must be a checkpoint file, a run directory or latest",
}


@pytest.mark.parametrize("override", GENERATE)
def test_bad_generation_option_is_one_line(override):
    with pytest.raises(ConfigError) as err:
        validate_generate(compose_cfg("generate", override))
    one_line(str(err.value), GENERATE[override])


@pytest.mark.parametrize("content, pattern", [
    ("", r"prompt_file=.*empty\.txt: holds no prompt \(one per line\)"),
    ("\n  \n\t\n", r"prompt_file=.*empty\.txt: holds no prompt"),
    (None, r"prompt_file=.*empty\.txt: cannot be read \(Is a directory\)"),
])
def test_empty_prompt_file(tmp_path, content, pattern):
    path = tmp_path / "empty.txt"
    path.mkdir() if content is None else path.write_text(content)
    with pytest.raises(ConfigError) as err:
        read_prompts(compose_cfg("generate", f"prompt_file={path}"))
    one_line(str(err.value), pattern)


def test_prompt_that_is_not_text():
    with pytest.raises(ConfigError) as err:
        read_prompts(compose_cfg("generate", "prompt=[[a,b]]"))
    one_line(str(err.value), r"prompt=\[\['a', 'b'\]\]: must be a string or a list of strings")


def test_out_that_is_a_directory(tmp_path):
    with pytest.raises(ConfigError) as err:
        prepare_out(str(tmp_path))
    one_line(str(err.value), rf"out={re.escape(str(tmp_path))}: cannot be written \(Is a directory\)")


@pytest.mark.slow
def test_prompt_longer_than_the_context_is_noted_and_cut(clean_env, tmp_path):
    """Not an error: the model sees the last block_size tokens, and says so in one line."""
    path = small_checkpoint(tmp_path / "small.ckpt")
    proc = run("generate.py", f"ckpt={path}", "prompt=" + "word " * 40, "max_new_tokens=3", "device=cpu",
               env=clean_env)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: 1 prompt(s) longer than block_size=8 tokens: the model sees the last 8"]
    assert proc.stdout.startswith(("word " * 40).strip())  # Hydra drops the trailing space


def test_token_cache_trailer_round_trip(tmp_path):
    ids = np.arange(1000, dtype=np.uint16)
    token_cache.write(tmp_path / "x.tok", ids)
    assert token_cache.read(tmp_path / "x.tok").tolist() == ids.tolist()
    assert token_cache.read(tmp_path / "missing.tok") is None
