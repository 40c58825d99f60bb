"""MFU: the arithmetic, the GPU datasheet table, the CPU peak cache, and what a run records."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import TINY, read_metrics, run_dirs, wandb_inspect

from article_gpt.tracking import mfu


@pytest.mark.parametrize(("name", "dtype", "peak", "label"), [
    ("NVIDIA H100 80GB HBM3", "bf16", 989e12, "H100 SXM"),
    ("NVIDIA H100 PCIe", "bf16", 756e12, "H100 PCIe"),
    ("NVIDIA H100 PCIe", "tf32", 378e12, "H100 PCIe"),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312e12, "A100"),
    ("NVIDIA L4", "fp32", 30.3e12, "L4"),
    ("NVIDIA L40S", "bf16", 362e12, "L40S"),  # not taken for an L4
    ("Tesla T4", "fp16", 65e12, "T4"),
])
def test_datasheet_peaks(name, dtype, peak, label):
    got, source = mfu.gpu_peak(name, dtype)
    assert got == peak and label in source and source.startswith("datasheet")


@pytest.mark.parametrize(("name", "dtype"), [
    ("Tesla T4", "bf16"),  # no bf16 on Turing: no figure rather than a wrong one
    ("NVIDIA GeForce RTX 3090", "bf16"),  # not in the table
    ("NVIDIA A10G", "bf16"),  # an A10 variant with other clocks: no exact word match
])
def test_unknown_gpu_has_no_peak(name, dtype):
    peak, source = mfu.gpu_peak(name, dtype)
    assert peak is None and source.startswith("unknown")


def test_matmul_dtype_follows_precision_and_tf32():
    assert mfu.matmul_dtype("bf16-mixed", True, "cuda") == "bf16"
    assert mfu.matmul_dtype("16-mixed", False, "cuda") == "fp16"
    assert mfu.matmul_dtype("32-true", True, "cuda") == "tf32"
    assert mfu.matmul_dtype("32-true", False, "cuda") == "fp32"
    assert mfu.matmul_dtype("32-true", True, "cpu") == "fp32"  # tf32 is a CUDA setting


def test_mfu_arithmetic():
    # 6e6 FLOPs/token x 1,000 tokens/s = 6 GFLOP/s, over 2 devices of 100 GFLOP/s each
    assert mfu.mfu(6e6, 1000.0, 100e9, devices=2) == pytest.approx(0.03)
    assert mfu.mfu(6e6, 1000.0, 100e9) == pytest.approx(0.06)
    for missing in [(None, 1000.0, 1e11), (6e6, None, 1e11), (6e6, 1000.0, None)]:
        assert mfu.mfu(*missing) is None


def test_cpu_peak_cache_keeps_the_best_then_only_reads(tmp_path):
    cache = tmp_path / "peaks.json"
    key = mfu.cpu_key(1)
    # a first measurement slowed by other load: the next measurements replace it with the best
    cache.write_text(json.dumps({key: {"flops": 1.0, "measurements": 0}}))
    first, source = mfu.cached_cpu_peak(cache, threads=1, seconds=0.02)
    assert first > 1.0 and "best of 1" in source
    entry = json.loads(cache.read_text())[key]
    assert entry["flops"] == first and entry["measurements"] == 1
    # a higher figure already cached survives a measurement: the cache keeps the maximum
    cache.write_text(json.dumps({key: {"flops": 1e18, "measurements": 1}}))
    assert mfu.cached_cpu_peak(cache, threads=1, seconds=0.02)[0] == 1e18
    assert json.loads(cache.read_text())[key]["measurements"] == 2
    # after MEASUREMENTS, the cache is only read (a sentinel no matmul could produce comes back)
    cache.write_text(json.dumps({key: {"flops": 12345.0, "measurements": mfu.MEASUREMENTS}}))
    assert mfu.cached_cpu_peak(cache, threads=1) == (12345.0, mfu.cached_cpu_peak(cache, threads=1)[1])
    assert json.loads(cache.read_text())[key]["measurements"] == mfu.MEASUREMENTS
    # another thread count is another machine configuration: measured on its own
    assert mfu.cached_cpu_peak(cache, threads=2, seconds=0.02)[0] != 12345.0
    assert set(json.loads(cache.read_text())) == {key, mfu.cpu_key(2)}


def test_a_run_faster_than_the_cached_peak_measures_again_and_never_reports_over_100(tmp_path):
    cache = tmp_path / "peaks.json"
    key = mfu.cpu_key(1)
    # a peak measured while other work held the cores, already read-only (MEASUREMENTS reached)
    cache.write_text(json.dumps({key: {"flops": 1e3, "measurements": mfu.MEASUREMENTS}}))
    run = {"tokens_per_sec": 1e3, "flops_per_token": 1e4, "threads": 1}  # 1e7 FLOP/s achieved
    record = mfu.run_record(None, run, "32-true", False, cache_file=cache)
    assert 0 < record["mfu"] <= 1 and record["peak_flops"] > 1e7
    assert json.loads(cache.read_text())[key]["flops"] == record["peak_flops"]  # the cache was raised
    # a figure no CPU reaches: no MFU rather than one above 100%, and the reason says what to do
    run = {"tokens_per_sec": 1e9, "flops_per_token": 1e9, "threads": 1}
    record = mfu.run_record(None, run, "32-true", False, cache_file=cache)
    assert record["mfu"] is None and "benchmark.py peak" in record["peak_source"]


def test_measured_peak_is_plausible():
    flops = mfu.measure_matmul_peak(torch.device("cpu"), n=256, seconds=0.02)
    assert 1e8 < flops < 1e14  # between a very slow core and far beyond any CPU


@pytest.mark.slow
def test_run_records_mfu_peak_and_memory(run_cli, outputs, clean_env, tmp_path):
    """A run's metrics.json and W&B summary carry MFU, the peak it is against, and peak memory."""
    cache_home = tmp_path / "xdg"
    run_cli("train.py", *TINY, "model.num_layers=1", "logger=wandb", extra_env={"XDG_CACHE_HOME": str(cache_home)})
    (run_dir,) = run_dirs(outputs)
    m = read_metrics(run_dir)
    assert m["peak_source"].startswith("measured fp32 matmul") and m["peak_flops"] > 0
    assert m["mfu"] == round(m["flops_per_token"] * m["tokens_per_sec"] / m["peak_flops"], 4)
    assert 0 < m["mfu"] < 1.5  # a real fraction of the measured peak (noisy machines allowed)
    assert m["peak_host_memory_mb"] > 50 and m["peak_device_memory_mb"] is None  # CPU run
    cached = json.loads((cache_home / "article_gpt" / "peak_flops.json").read_text())
    assert cached[mfu.cpu_key(m["threads"])]["flops"] == m["peak_flops"]
    summary = wandb_inspect(run_dir, clean_env, summary=True)["summary"]
    assert math.isclose(summary["mfu"], m["mfu"]) and math.isclose(summary["tokens_per_sec"], m["tokens_per_sec"])


def test_sweep_summary_shows_mfu(tmp_path):
    """The summary's tokens/s and MFU columns (markdown and CSV), from the runs' metrics.json."""
    import csv

    from article_gpt.sweeps.records import Run
    from article_gpt.sweeps.summary import markdown_table, write_csv

    runs = [Run(tmp_path / str(i), {"status": "completed", "val_loss": 5.0 + i, "tokens_per_sec": 1000.0 * (i + 1),
                                    "mfu": mfu_value, "peak_flops": 1e11}, {}, label=str(i))
            for i, mfu_value in enumerate([0.1234, None])]
    table = markdown_table(runs).splitlines()
    head = [c.strip() for c in table[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    assert [row[head.index("MFU")] for row in rows] == ["12.3%", "-"]
    write_csv(tmp_path / "summary.csv", runs)
    with (tmp_path / "summary.csv").open() as f:
        assert [r["mfu"] for r in csv.DictReader(f)] == ["0.1234", ""]
