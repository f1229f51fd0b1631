"""Execute every tutorial notebook (nbclient, the venv's own ``python3`` kernel): no cell errors,
something shown, and figures drawn by those that plot. The kernel's CPU time and the wall time are printed
(no time is asserted: on a shared machine neither is stable; the notebooks' cost is watched there).
"""
import glob
import os
import resource
import time

import pytest

NOTEBOOKS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "notebooks", "*.ipynb")))


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # one OpenMP thread in the kernel: its CPU time then measures the notebook's work, not the
    # spin-waiting of two threads on a shared machine (which inflated it 3-30x here)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    cpu0, t0 = _children_cpu(), time.time()
    client.execute()  # starts, runs and shuts down (reaps) the kernel; raises CellExecutionError on an error
    wall, cpu = time.time() - t0, _children_cpu() - cpu0
    print(f"{os.path.basename(path)}: wall {wall:.0f} s, kernel CPU {cpu:.0f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    shown = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert shown, f"{os.path.basename(path)} showed nothing"
    if "plt." in open(path).read():  # a notebook that plots must draw its figures
        assert any("image/png" in o.get("data", {}) for o in shown), f"{os.path.basename(path)} drew no figure"


def test_there_are_notebooks():
    assert any(p.endswith("01_saliency.ipynb") for p in NOTEBOOKS)
