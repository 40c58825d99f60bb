"""`python train.py` end to end, in real subprocesses: run dir, artifacts, offline W&B,
checkpoints, token cache, unique run dirs, one-line errors and no secrets on disk."""

from __future__ import annotations

import math
import re
import secrets
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY, read_metrics, run_dirs, wandb_inspect

from article_gpt.model.gpt import GPT, GPTConfig
from article_gpt.training.module import GPTModule

FAKE_KEY = secrets.token_hex(20)  # 40 hex digits, like a real W&B API key, unique to this session
RUN_DIR_NAME = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}-[0-9a-f]{6}")  # time to the microsecond + uid
METRIC_KEYS = {"status", "val_loss", "val_ppl", "train_loss", "params_total", "params_non_embedding",
               "flops_per_token", "tokens_per_sec", "steps", "epochs", "elapsed_s", "wandb_run_id", "wandb_dir"}
TINY_MODEL = dict(vocab_size=50257, block_size=16, embedding_dim=32, num_layers=2, heads=2, head_size=16)


def snapshot(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


@pytest.fixture(scope="module")
def runs(module_cli):
    """Two real runs into one outputs folder: the first with the default W&B logger and no
    credentials (offline on its own), the second with an API key in the environment but
    WANDB_MODE=offline. The second finds the first's token cache."""
    run, env, outputs = module_cli
    first = run("train.py", *TINY)
    cache = outputs / "cache" / "tokens"
    cache_after_first = snapshot(cache)
    second = run("train.py", *TINY, extra_env={"WANDB_API_KEY": FAKE_KEY, "WANDB_MODE": "offline"})
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
    with torch.device("meta"):
        model = GPT(GPTConfig(**TINY_MODEL))
    counts = model.num_params()
    assert (m["params_total"], m["params_non_embedding"]) == (counts["params_total"], counts["params_non_embedding"])
    assert m["flops_per_token"] == model.flops_per_token()

    png = (run_dir / "loss.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    samples = (run_dir / "samples.txt").read_text(encoding="utf-8")
    texts = re.split(r"^=== .* ===\n", samples, flags=re.M)[1:]  # one per validation epoch
    assert texts and all(t.startswith("Backpropagation is") for t in texts), samples
    assert "wandb sync" in runs.first.stdout


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


def test_checkpoint_alone_rebuilds_the_model(runs):
    path = runs.dirs[0] / "checkpoints" / "best.ckpt"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # plain tensors and containers only
    hp = ckpt["hyper_parameters"]
    assert hp["model"] == {**TINY_MODEL, "dropout": 0.1, "bias": True, "tie_weights": True, "loss_chunk_size": 1024}
    assert all(k.startswith("model.") for k in ckpt["state_dict"])
    model = GPT(GPTConfig(**hp["model"])).eval()
    model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}, strict=True)

    reference = GPTModule.load_from_checkpoint(path, map_location="cpu").model.eval()
    x = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the fused training loss returns no logits: compare the loss and the full head
        (_, loss), (_, expected_loss) = model(x, x), reference(x, x)
        logits, expected = model.lm_head(model.hidden(x)), reference.lm_head(reference.hidden(x))
    assert torch.equal(logits, expected) and torch.equal(loss, expected_loss)
    assert not torch.equal(model.tok_emb.weight, GPT(GPTConfig(**hp["model"])).tok_emb.weight)  # trained weights


def test_second_run_reuses_the_token_cache(runs):
    assert len(runs.cache_after_first) == 2  # train.txt and val.txt, one cache file each
    assert snapshot(runs.cache) == runs.cache_after_first  # no file added or rewritten
    first_log = (runs.dirs[0] / "train.log").read_text()
    second_log = (runs.dirs[1] / "train.log").read_text()
    assert first_log.count("token cache miss") == 2 and "token cache hit" not in first_log
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
    second = runs.dirs[1]
    assert read_metrics(second)["wandb_mode"] == "offline"  # WANDB_MODE wins over the key
    key = FAKE_KEY.encode()
    for folder in (runs.outputs, Path(runs.env["HOME"])):  # run dirs, W&B files, token cache, ~
        leaks = [p for p in folder.rglob("*") if p.is_file() and key in p.read_bytes()]
        assert not leaks, f"the API key was written to {leaks}"
    assert FAKE_KEY not in runs.second.stdout + runs.second.stderr


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
    "missing-path": (["data.train.path=/nope.txt"], r"error: /nope\.txt: no such file or directory"),
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
