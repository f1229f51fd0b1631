"""Shared test set-up: offline hub, matplotlib cache in a temp dir, deterministic torch."""
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# two xdist workers share the two cores (pyproject's addopts): one torch thread each, no spin-waiting
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture(autouse=True)
def _threads_left_as_found():
    """A library call must not leave torch's thread count changed (training recipes set their own:
    left at 2 in a test worker, every later test in it oversubscribed the two cores, 2-4x slower)."""
    before = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    if after != before:
        torch.set_num_threads(before)
        pytest.fail(f"the test left torch's thread count at {after} (was {before})")


# ------------------------------------------------------------------ file order
# pyproject runs xdist with --dist loadfile --no-loadscope-reorder: files go to the workers in this
# order, one at a time as a worker frees up. Longest first (seconds of test time per file in a full
# run here, largest first), so the run does not end on one worker finishing a long file while the
# other idles (xdist's own reorder, by test count, put the one-test detection files last); the rest
# alphabetical; exclusive files (Ray) at the very end, when the other worker has only short files left.
LONGEST_FIRST = (
    "test_saliency_floors", "test_notebooks", "test_prototypes_organism", "test_sae_organisms", "test_probe_steer",
    "test_grounding", "test_detect_chair", "test_tracing_organism", "test_flow_organism",
    "test_sae_organisms_diffusion", "test_zoo_diffusion", "test_zoo_llava_aligned", "test_meandiff", "test_spill",
    "test_audit", "test_method_matrix", "test_zoo_llava", "test_detect_pope", "test_diffusion_ground",
    "test_dataset_parity", "test_pruning_organism", "test_serve_browser", "test_dataset_parity_steer",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}

    def key(item):
        if item.get_closest_marker("exclusive"):
            return (2, 0)
        mod = item.nodeid.split("::")[0].rsplit("/", 1)[-1][:-3]
        return (0, rank[mod]) if mod in rank else (1, 0)

    items.sort(key=key)  # stable: a file's tests stay together and in their order


# ------------------------------------------------------------------ exclusive files
# Tests marked ``exclusive`` (Ray: two worker processes per run, gloo all-reduces every step) need the
# machine's cores to themselves: beside the other xdist worker they ran 3-8x slower than alone
# (measured: tests/test_scale.py 141 s alone, 502 s of one worker's time in a loaded full run; the
# data-parallel SAE test 26 s vs 200 s). Every test holds a shared lock; a run of consecutive
# exclusive tests (one file: --dist loadfile) holds it exclusively, so the other worker waits.
_HELD: dict = {}


def _lock_files(config):
    """The lock files, in the run's temp root that every xdist worker shares (pytest prunes old runs)."""
    import fcntl

    base = os.path.join(str(config._tmp_path_factory.getbasetemp().parent), "exclusive")
    return fcntl, open(base + ".gate", "a"), open(base + ".rw", "a")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not os.environ.get("PYTEST_XDIST_TESTRUNUID"):
        yield
        return
    exclusive = item.get_closest_marker("exclusive") is not None
    if _HELD.get("mode") != ("ex" if exclusive else "sh"):
        _release()
        fcntl, gate, rw = _lock_files(item.config)
        if exclusive:  # the gate first: shared requests queue behind it, so this one is not starved
            fcntl.flock(gate, fcntl.LOCK_EX)
            fcntl.flock(rw, fcntl.LOCK_EX)
        else:
            fcntl.flock(gate, fcntl.LOCK_SH)
            fcntl.flock(rw, fcntl.LOCK_SH)
            fcntl.flock(gate, fcntl.LOCK_UN)
        _HELD.update(mode="ex" if exclusive else "sh", files=(gate, rw))
    try:
        yield
    finally:
        if not exclusive or nextitem is None or nextitem.get_closest_marker("exclusive") is None:
            _release()


def _release():
    for f in _HELD.pop("files", ()):
        f.close()  # closing the file releases its lock
    _HELD.pop("mode", None)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def pil_image():
    """A 128x128 RGB image with two coloured squares (no dependency on the shapes world)."""
    from PIL import Image

    a = np.full((128, 128, 3), 30, np.uint8)
    a[20:50, 20:50] = (220, 40, 40)
    a[70:110, 60:100] = (50, 90, 230)
    return Image.fromarray(a)


def load_shipped(name: str):
    """A shipped organism, loaded; the test fails (not skips) when its weights are missing."""
    import vlinterp
    from vlinterp.zoo import available, weights_dir

    if not available(name):
        pytest.fail(f"{name} weights are not shipped in {weights_dir(name)}")
    return vlinterp.load(name)


def check_card(recipe) -> dict:
    """An organism's shipped card names it, its floors and its training command, and every floor it
    misses is one its recipe's ``REACHED`` states. Returns the card."""
    from vlinterp import zoo

    card = zoo.card(recipe.NAME)
    assert card["name"] == recipe.NAME
    assert card["floors"] == {k: list(v) for k, v in recipe.FLOORS.items()}
    assert card["command"].startswith(f"vlinterp zoo train {recipe.NAME} --out ")
    missed = [k for k, ok in card["floors_met"].items() if not ok]
    assert set(missed) <= set(recipe.REACHED), (missed, card["metrics"])
    return card


def check_floors(recipe, metrics: dict) -> None:
    """``metrics`` meet the recipe's floors, except where ``REACHED`` names the (lower) level the
    shipped weights really reach; greedy generation agrees with the scored answers."""
    from vlinterp.zoo.common import check_floor

    bounds = {k: (op, recipe.REACHED.get(k, v)) for k, (op, v) in recipe.FLOORS.items()}
    failed = {k: (metrics.get(k), op, v) for k, (op, v) in bounds.items() if not check_floor(metrics.get(k), op, v)}
    assert not failed, f"levels missed: {failed}; all metrics: {metrics}"
    assert metrics["generate_agreement"] >= 0.75, metrics


@pytest.fixture(scope="session")
def shapes_llava():
    """The shipped shapes-llava organism, loaded once (its weights ship inside the package)."""
    return load_shipped("shapes-llava")
