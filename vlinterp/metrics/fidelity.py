"""Fidelity of a saliency map to the model: captum's ``infidelity`` and ``sensitivity_max`` (Yeh et
al., NeurIPS 2019; the TorchEsegeta set beside pointing game and deletion / insertion).

* :func:`infidelity`: does the map predict what removing a region does to the score? The model is
  read as a function of a **presence mask** ``m`` ``[H, W]`` in ``[0, 1]`` over the image: ``x(m) =
  m * x + (1 - m) * blur(x)`` (the deletion metric's blur baseline), so ``m = 1`` is the image. A
  perturbation ``I`` removes random squares: the image is cut into ``grid x grid`` cells and each
  is removed (``I = 1`` on it) with probability ``p``. Infidelity is
  ``E_I[(beta * <a, I> - (f(x) - f(x(1 - I))))^2]`` over ``n_samples`` draws with the map ``a``
  ``[H, W]`` at its best scale ``beta`` (captum's ``normalize=True``: a map's overall scale, and
  its sign, do not count). In units of the score squared; **lower is better**; a map carrying no information
  reads ``E[(f(x) - f(x(1 - I)))^2]``.
* :func:`sensitivity_max`: is the map stable under small input changes? The maximum over
  ``n_samples`` uniform perturbations of the pixels within ``radius`` (image in ``[0, 1]``,
  rounded back to uint8) of ``||a(x + d) - a(x)||_F / ||a(x)||_F``, each map min-max normalised
  first (an offset does not hide a change). **Lower is better**; a map that ignores the image reads 0.

``score_fn(images [N, H, W, 3] uint8) -> [N]`` as in :mod:`.faithfulness`; ``explain_fn(images
[N, H, W, 3] uint8) -> [N, H, W]`` maps (e.g. a saliency method re-run on each image).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..core.errors import ConfigError
from .faithfulness import ScoreFn, _batched, _image_array, as_map, blur, normalize

ExplainFn = Callable[[np.ndarray], np.ndarray]


def square_removals(n: int, shape: tuple[int, int], grid: int = 8, p: float = 0.25,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """``[n, H, W]`` float64 0/1: ``grid x grid`` cells of the image, each removed (1) with
    probability ``p``; a draw that removes nothing removes one random cell instead."""
    H, W = shape
    cells = (torch.rand(n, grid, grid, generator=generator, dtype=torch.float64) < p).to(torch.float64)
    empty = cells.flatten(1).sum(1) == 0
    if empty.any():
        pick = torch.randint(grid * grid, (int(empty.sum()),), generator=generator)
        flat = cells.flatten(1)
        flat[torch.nonzero(empty)[:, 0], pick] = 1.0
        cells = flat.view(n, grid, grid)
    ys = torch.clamp((torch.arange(H) * grid) // H, max=grid - 1)
    xs = torch.clamp((torch.arange(W) * grid) // W, max=grid - 1)
    return cells[:, ys][:, :, xs]


def infidelity(image, saliency, score_fn: ScoreFn, target: int = 0, n_samples: int = 16, grid: int = 8, p: float = 0.25,
               seed: int = 0, blur_sigma: float | None = None, batch_size: int = 17) -> float:
    """captum's normalised infidelity of the map of row ``target`` of ``saliency`` (a Result or an
    ``[H, W]`` map) for ``score_fn`` on ``image`` (see the module doc)."""
    from captum.metrics import infidelity as captum_infidelity

    if n_samples < 1 or grid < 1 or not 0 < p <= 1:
        raise ConfigError(f"infidelity needs n_samples >= 1, grid >= 1 and 0 < p <= 1 (got {n_samples}, {grid}, {p})")
    img = _image_array(image)
    H, W = img.shape[:2]
    a = torch.as_tensor(as_map(saliency, target), dtype=torch.float64)
    if tuple(a.shape) != (H, W):
        from ..core.errors import ShapeMismatchError

        raise ShapeMismatchError(f"saliency map is {tuple(a.shape)} but the image is {(H, W)}")
    x = torch.as_tensor(img, dtype=torch.float64)
    base = torch.as_tensor(blur(img, blur_sigma), dtype=torch.float64)
    gen = torch.Generator().manual_seed(int(seed))

    def forward(m: torch.Tensor) -> torch.Tensor:  # m [N, H, W] -> scores [N]
        mixed = m[..., None] * x + (1 - m[..., None]) * base
        imgs = mixed.round().clamp(0, 255).to(torch.uint8).numpy()
        return torch.as_tensor(_batched(score_fn, imgs, batch_size), dtype=torch.float64)

    def perturb(inputs: torch.Tensor):
        I = square_removals(inputs.shape[0], (H, W), grid, p, gen)
        return I, inputs - I

    v = captum_infidelity(forward, perturb, torch.ones(1, H, W, dtype=torch.float64), a[None],
                          n_perturb_samples=int(n_samples), normalize=True)
    return float(v.reshape(-1)[0])


def sensitivity_max(explain_fn: ExplainFn, image, n_samples: int = 4, radius: float = 0.02, seed: int = 0,
                    reference=None) -> float:
    """captum's max-sensitivity of ``explain_fn`` at ``image`` (see the module doc). ``reference``:
    the map of the unperturbed image when already computed (``[H, W]``; saves one explanation)."""
    from captum.metrics import sensitivity_max as captum_sensitivity

    if n_samples < 1 or not radius > 0:
        raise ConfigError(f"sensitivity needs n_samples >= 1 and radius > 0 (got {n_samples}, {radius})")
    img = _image_array(image)
    x0 = torch.as_tensor(img, dtype=torch.float64)[None] / 255.0
    gen = torch.Generator().manual_seed(int(seed))
    ref = None if reference is None else torch.as_tensor(normalize(as_map(reference)), dtype=torch.float64)[None]

    def explain(x) -> tuple[torch.Tensor]:  # ([N, H, W, 3] in [0, 1],) -> ([N, H, W],)
        x = x[0] if isinstance(x, tuple) else x
        if ref is not None and x.shape[0] == 1 and torch.equal(x, x0):
            return (ref,)
        imgs = (x * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
        with torch.enable_grad():  # captum calls this under no_grad; gradient methods need it back
            maps = np.asarray(explain_fn(imgs), np.float64)
        return (torch.as_tensor(np.stack([normalize(m) for m in maps]), dtype=torch.float64),)

    def perturb(inputs: torch.Tensor) -> torch.Tensor:
        noise = (torch.rand(inputs.shape, generator=gen, dtype=torch.float64) * 2 - 1) * radius
        return (inputs + noise).clamp(0, 1)

    v = captum_sensitivity(explain, x0, perturb_func=perturb, n_perturb_samples=int(n_samples))
    return float(v.reshape(-1)[0])


__all__ = ["infidelity", "sensitivity_max", "square_removals"]
