"""Timing and memory helpers of ``benchmarks/realsize.py``: interleaved repeats (every configuration
timed once per round, so drift on a shared machine hits all alike), medians, per-round ratios, and
peak resident memory of a call (``VmHWM`` after resetting it through ``/proc/self/clear_refs``)."""
from __future__ import annotations

import gc
import os
import statistics
import threading
import time

import torch


def sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device="cpu"):
    """``(result, seconds)`` of ``fn()``."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def interleaved(configs: dict, repeats: int, base: str | None = None, device="cpu", warmup: int = 1, progress: bool = True,
                self_timed: bool = False) -> dict:
    """``configs`` ``{name: fn}``: each round runs every ``fn`` once (rotating the start), ``warmup``
    rounds untimed. Returns ``{name: {"s": median seconds, "all": [...], "ratio": median over rounds of
    t / t[base]}}`` (``ratio`` only with ``base``). ``self_timed``: each ``fn`` returns its own seconds
    (set-up it does is left out)."""
    names = list(configs)
    for _ in range(warmup):
        for n in names:
            configs[n]()
    times = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            times[n].append(configs[n]() if self_timed else timed(configs[n], device)[1])
        if progress:
            print(f"    round {r + 1}/{repeats}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names), flush=True)
    out = {n: {"s": statistics.median(times[n]), "all": times[n]} for n in names}
    if base is not None:
        for n in names:
            out[n]["ratio"] = statistics.median([a / b for a, b in zip(times[n], times[base])])
    return out


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def rss_mb() -> float:
    return _status("VmRSS") / 2**20


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _settle() -> None:
    gc.collect()
    from vlinterp.core.spill import release_heap

    release_heap()


def _sampled_peak(fn, key: str):
    """``(result, peak MB of /proc/self/status field ``key`` above its value before the call)``,
    sampled every 5 ms by a thread while ``fn`` runs."""
    before = _status(key)
    peak = [before]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], _status(key))
            time.sleep(0.005)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        out = fn()
    finally:
        stop.set()
        t.join()
    return out, max(0, peak[0] - before) / 2**20


def peak_mb(fn):
    """``(result, peak MB above the resident size before the call)``: ``VmHWM`` reset before the call
    where the kernel allows it, else a 5 ms sampling thread."""
    _settle()
    before = _status("VmRSS")
    if _reset_peak():
        out = fn()
        return out, max(0, _status("VmHWM") - before) / 2**20
    return _sampled_peak(fn, "VmRSS")


def peak_anon_mb(fn):
    """``(result, peak anonymous resident MB above the start)``: ``RssAnon`` sampled every 5 ms
    (spilled captures are file-backed mappings, which it leaves out, as the OS can drop them)."""
    _settle()
    return _sampled_peak(fn, "RssAnon")


def load() -> str:
    a, b, c = os.getloadavg()
    return f"load average {a:.1f} / {b:.1f} / {c:.1f} (1/5/15 min) on {os.cpu_count()} cores"


def machine(device) -> str:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    name = "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = _status_total()
    return f"{name}, {os.cpu_count()} cores, {mem:.0f} GiB, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def _status_total() -> float:
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) / 2**20
    except OSError:
        return float("nan")
