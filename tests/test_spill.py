"""A capture with a memory budget smaller than the full cache streams to disk instead of exceeding
it: peak resident anonymous memory (RssAnon, sampled after every forward) measured in a fresh
process. Spilled captures are file-backed mappings the OS can drop, so the budget bounds the
anonymous part; VmHWM (reset before the capture) is reported beside it."""
import json
import subprocess
import sys

import pytest
import torch

SCRIPT = r"""
import json, sys, torch
import vlinterp as vi
from vlinterp.data.shapes import make_split

torch.set_num_threads(1)
budget = None if sys.argv[1] == "none" else float(sys.argv[1])
m = vi.load("shapes-llava")
scenes = make_split("test", 16, 3)
b = m.prepare(images=[s.pil() for s in scenes], text=["describe the image."] * 16)
m.run(b)  # warm up allocator and kernels

def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
base, anon0, peak_anon = rss("VmRSS:"), rss("RssAnon:"), 0.0
with m.capture("blocks.*.resid", budget_mb=budget) as cache:
    for _ in range(48):
        m.run(b)
        peak_anon = max(peak_anon, rss("RssAnon:") - anon0)
    n = sum(len(v) for v in cache.steps.values())
    total = sum(t.numel() * t.element_size() for v in cache.steps.values() for t in v) / 2**20
    first = cache.steps["blocks.0.resid"][0].clone()
    spilled = getattr(cache, "n_spilled", 0)
print(json.dumps({"peak_mb": peak_anon, "hwm_mb": rss("VmHWM:") - base, "captured_mb": total, "n": n, "spilled": spilled,
                  "checksum": float(first.double().sum())}))
"""


def _run(budget):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(budget)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_budgeted_capture_streams_to_disk_and_stays_under_budget():
    full = _run("none")
    small = _run(20)
    assert full["captured_mb"] > 150 and small["captured_mb"] == pytest.approx(full["captured_mb"])
    assert small["n"] == full["n"] == 192 and small["spilled"] > 0 and full["spilled"] == 0
    assert small["checksum"] == full["checksum"]
    # the unbudgeted capture holds everything; the budgeted one its 20 MB plus one forward's transients.
    # The growth reads below the capture by what the allocator reuses of memory the warm-up freed
    # (measured 146.7 MB for 163.5 MB in one clean-clone run, 0.90x; 0.8x still shows the capture held)
    assert full["peak_mb"] > full["captured_mb"] * 0.8
    assert small["peak_mb"] < 20 + 60, small
    assert small["peak_mb"] < full["peak_mb"] / 2


def test_spill_cache_reads_back_and_cleans_up(tmp_path):
    from vlinterp.core.spill import SpillCache

    c = SpillCache(0)
    a, b = torch.arange(10.0), torch.ones(3, 4)
    c.add("x", a)
    c.add("y", b)
    assert c.n_spilled == 2 and torch.equal(c["x"], a) and torch.equal(c.steps["y"][0], b)
    d = c.dir
    c.close()
    import os

    assert not os.path.exists(d)
    kept = SpillCache(0, str(tmp_path / "keep"))
    kept.add("z", a)
    kept.close()
    assert len(os.listdir(tmp_path / "keep")) == 1  # a user's spill_dir is kept
