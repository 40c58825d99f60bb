"""`python train.py` end to end, in real subprocesses: run dir, artifacts, offline W&B,
checkpoints, token cache, unique run dirs, one-line errors and no secrets on disk."""

from __future__ import annotations

import math
import re
import secrets
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from conftest import ROOT, TINY, read_metrics, run_dirs, wandb_inspect
from hand_count import hand_flops_per_token, hand_params

from article_gpt.data.tokenizer import encode
from article_gpt.model.gpt import GPT, GPTConfig
from article_gpt.runs.record import NOT_OPTIMIZABLE, OPTIMIZABLE_METRICS

FAKE_KEY = secrets.token_hex(20)  # 40 hex digits, like a real W&B API key, unique to this session
RUN_DIR_NAME = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}-[0-9a-f]{6}")  # time to the microsecond + uid
METRIC_KEYS = {"status", "val_loss", "val_ppl", "train_loss", "params_total", "params_non_embedding",
               "flops_per_token", "tokens_per_sec", "steps", "epochs", "elapsed_s", "wandb_run_id", "wandb_dir"}
TINY_MODEL = dict(vocab_size=50257, block_size=16, embedding_dim=32, num_layers=2, heads=2, head_size=16)


def snapshot(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once
LR_RUN = ["optim.warmup_steps=2", "optim.lr=1e-3", "optim.min_lr_ratio=0.1"]  # 6 steps: 2 warmup, 4 cosine


@pytest.fixture(scope="module")
def runs(module_cli):
    """Two real runs into one outputs folder: the first with the default W&B logger and no
    credentials (offline on its own); the second in the same `auto` mode with a fake API key and an
    unreachable W&B server, so it starts online, fails, and falls back to offline after
    init_timeout. The second finds the first's token cache."""
    run, env, outputs = module_cli
    first = run("train.py", *TINY, *LR_RUN, timeout=900)  # long only on a machine shared by many jobs
    cache = outputs / "cache" / "tokens"
    cache_after_first = snapshot(cache)
    second = run("train.py", *TINY, "logger.wandb.init_timeout=5", timeout=900,
                 extra_env={"WANDB_API_KEY": FAKE_KEY, "WANDB_BASE_URL": UNREACHABLE})
    dirs = run_dirs(outputs)
    assert len(dirs) == 2, dirs
    return SimpleNamespace(run=run, env=env, outputs=outputs, first=first, second=second, dirs=dirs, cache=cache,
                           cache_after_first=cache_after_first)


def test_run_dir_holds_every_artifact(runs):
    run_dir = runs.dirs[0]
    assert run_dir.parent == runs.outputs / "runs" and RUN_DIR_NAME.fullmatch(run_dir.name)
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / ".hydra" / "overrides.yaml").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()

    m = read_metrics(run_dir)
    assert METRIC_KEYS <= m.keys(), METRIC_KEYS - m.keys()
    assert m["status"] == "completed"
    assert math.isfinite(m["val_loss"]) and m["val_ppl"] == pytest.approx(math.exp(m["val_loss"]))
    assert math.isfinite(m["train_loss"]) and m["tokens_per_sec"] > 0 and m["elapsed_s"] > 0
    assert m["steps"] == 6 and m["epochs"] >= 1  # trainer=debug: max_steps 6, 3 batches an epoch
    shape = [TINY_MODEL[k] for k in ("vocab_size", "block_size", "embedding_dim", "num_layers", "heads", "head_size")]
    # by hand: 50257*32 + 16*32 + 2 * 12,704 (a block) + 64 (ln_f) = 1,634,208; 6 * (that - 512) + 12*2*32*16
    assert m["params_total"] == hand_params(*shape) == 1_634_208
    assert m["params_non_embedding"] == 1_634_208 - 50257 * 32 - 16 * 32
    assert m["flops_per_token"] == hand_flops_per_token(*shape) == 9_814_464

    png = (run_dir / "loss.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    samples = (run_dir / "samples.txt").read_text(encoding="utf-8")
    texts = re.split(r"^=== .* ===\n", samples, flags=re.M)[1:]  # one per validation epoch
    assert texts and all(t.startswith("Backpropagation is") for t in texts), samples
    assert "wandb sync" in runs.first.stdout


def test_end_of_run_console_lines(runs):
    """README: the console ends with the run directory, the best validation loss and a sample."""
    run_dir, m = runs.dirs[0], read_metrics(runs.dirs[0])
    out = runs.first.stdout
    last_sample = re.split(r"^=== .* ===\n", (run_dir / "samples.txt").read_text(encoding="utf-8"), flags=re.M)[-1]
    assert f"run dir:       {run_dir}\n" in out
    assert f"best val loss: {m['val_loss']:.4f} (ppl {m['val_ppl']:.1f}), from {m['val_loss_initial']:.4f}\n" in out
    assert f"sample:        {last_sample.rstrip(chr(10))!r}\n" in out


def test_lr_warms_up_then_follows_the_cosine(runs):
    """train/lr as W&B logged it at each step: linear warmup over 2 steps, then cosine from 1e-3 to
    1e-4 at the last (6th) step. The values are written out, not computed by the module's code."""
    records = wandb_inspect(runs.dirs[0], runs.env)
    lr = {int(r["history"]["item"]["trainer/global_step"]): r["history"]["item"]["train/lr"]
          for r in records if r["type"] == "history" and "train/lr" in r["history"]["item"]}
    # step s: s+1/2 while warming up; then 0.1 + 0.9 * (1 + cos(pi * (s - 2) / 4)) / 2
    expected = {0: 0.5e-3, 1: 1e-3, 2: 1e-3, 3: 0.86820e-3, 4: 0.55e-3, 5: 0.23180e-3}
    assert lr.keys() == expected.keys()
    for step, value in expected.items():
        assert lr[step] == pytest.approx(value, rel=1e-4), step


def test_offline_wandb_run_holds_config_and_summary(runs):
    run_dir = runs.dirs[0]
    m = read_metrics(run_dir)
    assert m["wandb_mode"] == "offline"  # no key, no login, no WANDB_MODE: offline on its own
    assert Path(m["wandb_dir"]).is_relative_to(run_dir / "wandb") and Path(m["wandb_dir"]).is_dir()
    assert f"wandb sync {m['wandb_dir']}" in runs.first.stdout
    final = wandb_inspect(run_dir, runs.env, summary=True)
    assert final["run_id"] == m["wandb_run_id"] and final["state"] == "finished"
    config = final["config"]
    assert config["model"]["heads"] == 2 and config["model"]["embedding_dim"] == 32  # resolved, with overrides
    assert config["params_total"] == m["params_total"] and config["data"]["block_size"] == 16
    summary = final["summary"]
    assert math.isfinite(summary["val/loss"]) and summary["best_val_loss"] == pytest.approx(m["val_loss"])


def val_loss_of(model: GPT, block: int = 16, batches: int = 2, batch_size: int = 16) -> float:
    """The validation loss as trainer=debug measures it (the first 2 batches of non-overlapping
    windows of data/val.txt), computed here from the text, not by the run."""
    ids = torch.tensor(encode((ROOT / "data" / "val.txt").read_text(encoding="utf-8")))
    starts = list(range(0, len(ids) - block, block))[: batches * batch_size]
    x = torch.stack([ids[s : s + block] for s in starts])
    y = torch.stack([ids[s + 1 : s + block + 1] for s in starts])
    with torch.no_grad():
        return model.eval()(x, y)[1].item()  # equal batches: the mean of batch means is the mean


def test_checkpoint_alone_rebuilds_the_trained_best_model(runs):
    """best.ckpt rebuilds a model whose val loss is the best one the run logged, from weights that
    are not the run's own initial weights (rebuilt from its seed; their val loss is the logged step 0)."""
    m = read_metrics(runs.dirs[0])
    path = runs.dirs[0] / "checkpoints" / "best.ckpt"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # plain tensors and containers only
    hp = ckpt["hyper_parameters"]
    assert TINY_MODEL.items() <= hp["model"].items() and hp["model"]["loss_chunk_size"] == 1024
    assert all(k.startswith("model.") for k in ckpt["state_dict"])
    trained = GPT(GPTConfig(**hp["model"]))
    trained.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}, strict=True)
    assert val_loss_of(trained) == pytest.approx(m["val_loss"], abs=1e-4)  # the logged best, not the last

    L.seed_everything(1337, verbose=False)  # conf/train.yaml's seed: the run's model before step 1
    initial = GPT(GPTConfig(**hp["model"]))
    assert val_loss_of(initial) == pytest.approx(m["val_loss_initial"], abs=1e-4)
    assert m["val_loss"] < m["val_loss_initial"] - 0.01
    changed = [n for n, p in initial.named_parameters() if not torch.equal(p, trained.get_parameter(n))]
    assert "tok_emb.weight" in changed and len(changed) == len(list(initial.parameters()))  # every tensor trained


def test_second_run_reuses_the_token_cache(runs):
    assert len(runs.cache_after_first) == 2  # train.txt and val.txt, one cache file each
    assert snapshot(runs.cache) == runs.cache_after_first  # no file added or rewritten
    # the first run made the cache (its miss may be logged before train.log exists: the data is
    # checked before the run dir is made); the second run only read it
    second_log = (runs.dirs[1] / "train.log").read_text()
    assert second_log.count("token cache hit") == 2 and "token cache miss" not in second_log


def test_two_runs_never_share_a_dir(runs):
    a, b = (read_metrics(d) for d in runs.dirs)
    assert runs.dirs[0] != runs.dirs[1] and all(RUN_DIR_NAME.fullmatch(d.name) for d in runs.dirs)
    assert [a["run_dir"], b["run_dir"]] == [str(d) for d in runs.dirs]
    assert a["wandb_run_id"] != b["wandb_run_id"]
    for d, m in zip(runs.dirs, (a, b)):
        assert m["status"] == "completed" and Path(m["wandb_dir"]).is_relative_to(d)
        assert len(list((d / "wandb").glob("offline-run-*"))) == 1


def test_no_secret_is_written(runs):
    """The fake key was used: `auto` mode saw credentials, started online against a server that
    refuses the connection, and fell back to offline. The key is in no file and no output."""
    second = runs.dirs[1]
    assert read_metrics(second)["wandb_mode"] == "offline"
    assert "W&B: online start failed" in runs.second.stdout and "logging offline instead" in runs.second.stdout
    assert wandb_inspect(second, runs.env, summary=True)["state"] == "finished"
    key = FAKE_KEY.encode()
    for folder in (runs.outputs, Path(runs.env["HOME"])):  # run dirs, W&B files, token cache, ~
        leaks = [p for p in folder.rglob("*") if p.is_file() and key in p.read_bytes()]
        assert not leaks, f"the API key was written to {leaks}"
    assert FAKE_KEY not in runs.second.stdout + runs.second.stderr


def test_every_optimizable_metric_is_in_metrics_json(runs):
    """optimized_metric is checked against runs.record.OPTIMIZABLE_METRICS before a run starts: the list
    must name only numbers a real metrics.json has, and every such number must be on it (or be a setting)."""
    m = read_metrics(runs.dirs[0])
    numbers = {k for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert set(OPTIMIZABLE_METRICS) <= numbers, set(OPTIMIZABLE_METRICS) - numbers
    unlisted = numbers - set(OPTIMIZABLE_METRICS) - set(NOT_OPTIMIZABLE)
    assert not unlisted, f"metrics.json keys {unlisted}: add them to the RunRecord schema (runs/record.py)"


def test_refuses_to_run_into_a_finished_run_dir(runs):
    """Last in this module: it is pointed at the first run's dir."""
    run_dir = runs.dirs[0]
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and "wandb" not in p.parts}
    proc = runs.run("train.py", *TINY, "model.heads=4", f"hydra.run.dir={run_dir}", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        f"error: {run_dir}: already holds a finished run; refusing to overwrite it"], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert run_dirs(runs.outputs) == runs.dirs
    for p in (run_dir / "metrics.json", run_dir / "checkpoints" / "best.ckpt", run_dir / "checkpoints" / "last.ckpt",
              run_dir / "loss.png", run_dir / "samples.txt"):
        assert p.read_bytes() == before[p], f"{p} was rewritten"
    changed = [p.relative_to(run_dir) for p, data in before.items() if p.read_bytes() != data]
    assert not changed, f"the refused run rewrote {sorted(map(str, changed))}"  # .hydra/, train.log too


BAD_INPUTS = {  # case: (overrides, the whole stderr as a regex; {tmp} is the test's tmp dir)
    "missing-path": (["data.train.path=/nope.txt"], r"error: data\.train\.path=/nope\.txt: no such file or directory; "
                     r"expected a file, a directory of \.txt/\.md files or a glob"),
    "corpus-shorter-than-block": (
        ["model.block_size=100000"],
        r"error: \S+/data/train\.txt: train split has \d+ tokens, fewer than block_size \+ 1 = 100001; .*"),
    "heads-0": (["model.heads=0"], r"error: model\.heads=0: must be a positive integer"),
    "gpu": (["trainer=gpu"], r"error: trainer\.accelerator=gpu: no CUDA device on this machine; use trainer=cpu"),
    "non-utf8": (["data.train.path={tmp}/latin1.txt"], r"error: {tmp}/latin1\.txt: not UTF-8 text \(byte 3\)"),
    "empty-file": (["data.val.path={tmp}/empty.txt"], r"error: {tmp}/empty\.txt: file is empty"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_a_one_line_error(run_cli, outputs, tmp_path, case):
    """Fails before training, with one `error: ...` line naming the key, value or file."""
    if case == "gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 au lait, " * 50)
    (tmp_path / "empty.txt").write_bytes(b"")
    args, pattern = BAD_INPUTS[case]
    proc = run_cli("train.py", *TINY, *(a.format(tmp=tmp_path) for a in args), check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(pattern.replace("{tmp}", re.escape(str(tmp_path))), lines[0]), proc.stderr
    # found before Hydra makes the run dir (ValidateConfig): nothing that could pass for a run
    assert not (outputs / "runs").exists() or run_dirs(outputs) == []


@pytest.mark.slow
def test_the_default_run_learns(run_cli, outputs):
    """`python train.py` with no overrides (only the outputs folder moved into the test's tmp dir):
    the default model on the bundled articles, W&B offline on its own. Its speed is measured in
    README's Performance section, not asserted here."""
    proc = run_cli("train.py", timeout=900)
    (run_dir,) = run_dirs(outputs)
    m = read_metrics(run_dir)
    assert m["status"] == "completed" and m["params_total"] == 7_234_432  # model=tiny
    assert m["val_loss"] < m["val_loss_initial"] - 2.0  # learned far beyond the ~10.8 of a fresh model
    assert m["val_curve"][0] == [0, m["val_loss_initial"]] and m["steps"] > 100
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "loss.png", "samples.txt", "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert m["wandb_mode"] == "offline" and f"best val loss: {m['val_loss']:.4f}" in proc.stdout
