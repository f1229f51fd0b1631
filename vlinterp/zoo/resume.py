"""Mid-stage checkpoints of a training loop, so a stopped stage resumes at its last checkpoint.

A CPU run of shapes-qwen's LM stage takes longer than one working session, and a stage checkpoint
(``recipe_qwen._Stages``) is only written when a stage ends. :class:`LoopCheckpoint` saves, every
``every`` steps, what a resumed loop needs to go on as if it had not stopped:

* ``{tag}-{step}.safetensors``: the trainable parameters, by name;
* ``{tag}-{step}.optim.pt``: the optimiser state (tensors and numbers; read with ``weights_only=True``);
* ``{tag}.json``: ``{"step", "key", "rng"}`` (the batch sampler's numpy bit-generator state), written
  last, so a checkpoint counts only once its files are in place. ``key`` names the settings the
  checkpoint belongs to; another key starts the loop afresh.

Every file is written atomically; the previous step's files are removed once the new JSON is in place,
and only files vlinterp wrote (its folder manifest) are ever removed.
"""
from __future__ import annotations

import json
import os

import torch

from ..core.errors import ShapeMismatchError
from ..core.io import written_by_vlinterp


class LoopCheckpoint:
    """Checkpoints of one loop (``tag``) in ``directory``, every ``every`` steps, valid under ``key``."""

    def __init__(self, directory: str, tag: str, key: dict, every: int = 500):
        self.dir, self.tag, self.key, self.every = directory, tag, key, every

    def _path(self, suffix: str) -> str:
        return os.path.join(self.dir, self.tag + suffix)

    def _read(self) -> dict | None:
        path = self._path(".json")
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    def _record(self) -> dict | None:
        """The checkpoint record under this key (None when there is none, or it has another key)."""
        rec = self._read()
        return rec if rec is not None and rec.get("key") == self.key else None

    @staticmethod
    def _trainable(model) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def due(self, step: int, total: int) -> bool:
        """Whether to save after ``step`` steps are done (never after the last: the stage saves itself)."""
        return step % self.every == 0 and step < total

    def restore(self, model, opt: torch.optim.Optimizer, batches) -> int:
        """Load the last checkpoint under this key into ``model``/``opt``/``batches.rng``; returns the
        step to start from (0 when there is none)."""
        from safetensors.torch import load_file

        rec = self._record()
        if rec is None:
            return 0
        step = int(rec["step"])
        params = self._trainable(model)
        state = load_file(self._path(f"-{step}.safetensors"))
        if set(state) != set(params):
            raise ShapeMismatchError(f"{self._path(f'-{step}.safetensors')}: its parameters are not this model's trainable ones")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state[n])
        opt.load_state_dict(torch.load(self._path(f"-{step}.optim.pt"), weights_only=True))
        batches.rng.bit_generator.state = rec["rng"]
        return step

    def save(self, step: int, model, opt: torch.optim.Optimizer, batches) -> None:
        from safetensors.torch import save_file

        from ..core.io import atomic_path, write_json

        old = self._read()
        with atomic_path(self._path(f"-{step}.safetensors")) as tmp:
            save_file({n: p.detach().contiguous().cpu() for n, p in self._trainable(model).items()}, tmp)
        with atomic_path(self._path(f"-{step}.optim.pt")) as tmp:
            torch.save(opt.state_dict(), tmp)
        write_json(self._path(".json"), {"step": step, "key": self.key, "rng": batches.rng.bit_generator.state})
        if old is not None and int(old["step"]) != step:
            self._remove(int(old["step"]))

    def _remove(self, step: int) -> None:
        for suffix in (f"-{step}.safetensors", f"-{step}.optim.pt"):
            self._remove_file(self._path(suffix))

    @staticmethod
    def _remove_file(path: str) -> None:
        """Remove ``path`` only if vlinterp wrote it (and nobody changed it since)."""
        if written_by_vlinterp(path):
            os.remove(path)

    def clear(self) -> None:
        """Remove this loop's checkpoint (its stage has finished and saved itself)."""
        rec = self._read()
        if rec is not None:
            self._remove(int(rec["step"]))
        self._remove_file(self._path(".json"))
