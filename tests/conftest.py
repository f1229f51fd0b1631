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


@pytest.fixture(scope="session")
def shapes_llava():
    """The shipped shapes-llava organism, loaded once (its weights ship inside the package)."""
    return load_shipped("shapes-llava")
