"""Model FLOPs utilization: achieved model FLOP/s over the device's peak for the run's dtype.

GPUs: the dense (no sparsity) tensor-core peak from the vendor's datasheet, per dtype; a GPU
not in the table gets no MFU ("unknown"), never a guess. CPUs have no datasheet figure that a
torch run can reach, so the peak is the FLOP/s of one large fp32 matmul, measured once per
machine (CPU model, thread count, torch version) and cached in a JSON file, so later runs pay
nothing for it. The measured peak is a practical ceiling: MFU near 100% means the run is as
fast as torch's own matmul on this machine.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from article_gpt.tracking import peaks as peak_cache

# Dense peak FLOP/s per dtype from the datasheets (sparsity figures halved away). tf32 is
# what fp32 matmuls run at with ``tf32: true``. Rows are matched in order against
# torch.cuda.get_device_name(): the first row whose every word is a word of the name wins.
GPU_PEAKS: list[tuple[tuple[str, ...], str, dict[str, float]]] = [
    (("H100", "PCIe"), "H100 PCIe", {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51e12}),
    (("H100", "NVL"), "H100 NVL", {"bf16": 835e12, "fp16": 835e12, "tf32": 418e12, "fp32": 60e12}),
    (("H100",), "H100 SXM", {"bf16": 989e12, "fp16": 989e12, "tf32": 495e12, "fp32": 67e12}),
    (("H200",), "H200", {"bf16": 989e12, "fp16": 989e12, "tf32": 495e12, "fp32": 67e12}),
    (("A100",), "A100", {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
    (("L40S",), "L40S", {"bf16": 362e12, "fp16": 362e12, "tf32": 183e12, "fp32": 91.6e12}),
    (("L4",), "L4", {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12}),
    (("A10",), "A10", {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12}),
    (("V100",), "V100 SXM2", {"fp16": 125e12, "fp32": 15.7e12}),
    (("T4",), "T4", {"fp16": 65e12, "fp32": 8.1e12}),
]

PRECISION_DTYPE = {"bf16-mixed": "bf16", "bf16-true": "bf16", "bf16": "bf16", "16-mixed": "fp16",
                   "16-true": "fp16", "16": "fp16", "32-true": "fp32", "32": "fp32", "64-true": "fp64"}


def gpu_peak(device_name: str, dtype: str) -> tuple[float | None, str]:
    """(peak FLOP/s or None, where it comes from) for a GPU named ``device_name``."""
    words = device_name.replace("-", " ").split()
    for needed, label, peaks in GPU_PEAKS:
        if all(n in words for n in needed):
            if dtype in peaks:
                return peaks[dtype], f"datasheet: {label} dense {dtype}"
            return None, f"unknown: no {dtype} peak for {label}"
    return None, f"unknown: {device_name} is not in the datasheet table"


def matmul_dtype(precision: str, tf32: bool, device_type: str) -> str:
    """The dtype the run's matmuls use, as a GPU_PEAKS key."""
    dtype = PRECISION_DTYPE.get(str(precision), "fp32")
    return "tf32" if dtype == "fp32" and tf32 and device_type == "cuda" else dtype


def measure_matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 1024,
                        seconds: float = 0.5) -> float:
    """The best FLOP/s of square ``n`` matmuls repeated for about ``seconds`` (one warm-up first)."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up: threads started, kernels chosen
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def cpu_key(threads: int | None = None) -> str:
    return peak_cache.cpu_key(threads or torch.get_num_threads(), torch.__version__)


MEASUREMENTS = 3  # a machine's first runs each measure; the cache keeps the best of them


def cached_cpu_peak(cache_file: str | os.PathLike | None = None, threads: int | None = None,
                    measure: bool = False, seconds: float = 0.15) -> tuple[float, str]:
    """This machine's fp32 matmul peak at ``threads`` (default: torch's current count).

    The cache (``cache_file``, default ``default_cache_file()``) keeps the best measurement per
    CPU model, thread count and torch version. The first ``MEASUREMENTS`` calls on a machine
    each measure for ``seconds`` (so one measurement slowed by other load does not stay the
    peak), later ones only read; ``measure`` always measures. Returns (FLOP/s, its source).
    """
    threads = threads or torch.get_num_threads()
    key = cpu_key(threads)
    path = Path(cache_file) if cache_file else peak_cache.default_cache_file()
    table = peak_cache.read_table(path)
    entry = table.get(key) if isinstance(table.get(key), dict) else {}
    best, count = entry.get("flops"), int(entry.get("measurements", 0))
    if not isinstance(best, (int, float)) or measure or count < MEASUREMENTS:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            flops = measure_matmul_peak(torch.device("cpu"), seconds=seconds)
        finally:
            torch.set_num_threads(before)
        best = max(flops, best) if isinstance(best, (int, float)) else flops
        entry = {"flops": best, "measurements": count + 1, "measured": time.strftime("%Y-%m-%d", time.gmtime())}
        table[key] = entry
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(table, indent=2) + "\n")
            os.replace(tmp, path)  # atomic: parallel jobs never read half a file
        except OSError:
            pass  # a read-only home: the next run measures again
    return float(best), (f"measured fp32 matmul, {threads} threads, best of {entry['measurements']} "
                         f"(last {entry.get('measured', '?')})")


def device_peak(device: torch.device, precision: str, tf32: bool, cache_file=None, threads=None) -> dict:
    """``peak_flops`` (per device; None when unknown) and ``peak_source`` for a run's device."""
    if device.type == "cuda":
        dtype = matmul_dtype(precision, tf32, "cuda")
        peak, source = gpu_peak(torch.cuda.get_device_name(device), dtype)
    elif device.type == "cpu" and matmul_dtype(precision, tf32, "cpu") == "fp32":
        peak, source = cached_cpu_peak(cache_file, threads)
    else:
        peak, source = None, f"unknown: no peak for {device.type} at precision {precision}"
    return {"peak_flops": peak, "peak_source": source}


def mfu(flops_per_token: float | None, tokens_per_sec: float | None, peak_flops: float | None,
        devices: int = 1) -> float | None:
    """Achieved model FLOP/s over the peak of every device that produced ``tokens_per_sec``."""
    if not flops_per_token or not tokens_per_sec or not peak_flops or devices < 1:
        return None
    return flops_per_token * tokens_per_sec / (peak_flops * devices)


def peak_memory(device: torch.device | None) -> dict:
    """Peak resident memory of this process (ru_maxrss: the whole run, start-up included) and,
    on CUDA, the peak memory torch allocated on the device; MB, None where there is none."""
    host = None
    try:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        host = rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB elsewhere
    except (ImportError, OSError):  # no resource module (Windows)
        pass
    dev = None
    if device is not None and device.type == "cuda":
        dev = torch.cuda.max_memory_allocated(device) / 2**20
    return {"peak_host_memory_mb": None if host is None else round(host, 1),
            "peak_device_memory_mb": None if dev is None else round(dev, 1)}


def run_record(trainer, metrics: dict, precision: str, tf32: bool, cache_file=None) -> dict:
    """The run record's performance fields: the device's peak and where it comes from, MFU over
    every device (tokens_per_sec counts every DDP rank) and peak memory. ``metrics`` gives what
    they are computed from: ``tokens_per_sec``, ``flops_per_token`` and ``threads`` (the CPU peak
    is measured at the job's thread count). Never raises: it runs in the run's closing path."""
    try:
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        out = peak_memory(device)
        tps = metrics.get("tokens_per_sec")
        if not tps:  # no step finished: no MFU, and no reason to spend time on a peak
            return {"mfu": None, "peak_flops": None, "peak_source": None, **out}
        threads = metrics.get("threads")
        peak = device_peak(device, precision, tf32, cache_file, threads)
        devices = trainer.world_size if trainer is not None else 1
        value = mfu(metrics.get("flops_per_token"), tps, peak["peak_flops"], devices)
        if value is not None and value > 1 and device.type == "cpu":
            # The run beat the cached peak, so that peak was measured while other work held the
            # cores: measure again now (the cache keeps the higher figure), and if the run still
            # beats it, say so rather than report an MFU above 100%.
            flops, source = cached_cpu_peak(cache_file, threads, measure=True)
            peak = {"peak_flops": flops, "peak_source": source}
            value = mfu(metrics.get("flops_per_token"), tps, flops, devices)
            if value > 1:
                peak["peak_source"] = (f"unknown: the measured peak ({flops / 1e9:.1f} GFLOP/s) is below what "
                                       "the run achieved; run `python scripts/benchmark.py peak` on a quiet machine")
                value = None
        return {"mfu": None if value is None else round(value, 4), **peak, **out}
    except Exception as err:  # a fact we cannot read is left out, never the run's record
        return {"mfu": None, "peak_source": f"unknown: {type(err).__name__}: {err}"}
