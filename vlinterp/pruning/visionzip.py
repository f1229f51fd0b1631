"""VisionZip-style pruning (Yang et al. 2024), on the vision side before the language model.

Dominant tokens: the image tokens the vision tower's CLS token attends to most (heads averaged,
in the layer whose output feeds the projector). Contextual tokens: the remaining tokens are
grouped around ``round(contextual * k)`` evenly spaced targets by cosine similarity of their
features and each group is averaged into its target's slot. The projector then maps the
``k = dominant + contextual`` features; only those enter the language model, each at its own
position (a merged token at its target's). ``proportional=1`` (default) adds ``log(group size)``
to every attention logit on a merged token, so it draws the attention of the tokens it stands
for (ToMe's proportional attention); ``0`` turns that off.
"""
from __future__ import annotations

import torch

from ..core.attention import hf_self_attention
from ..core.errors import UnsupportedError
from .base import Pruner, register


@register("visionzip")
class VisionZip(Pruner):
    acts_on_vision = True

    def __init__(self, keep: float, contextual: float = 0.3, proportional: int = 1):
        super().__init__(keep)
        self.contextual, self.proportional = float(contextual), bool(proportional)

    def vision(self, runner, batch):
        """``(features [n, N, D], keep [n, N] bool, group sizes [n, N] or None)`` for the images of ``batch``."""
        cfg = runner.adapter.config
        if cfg.vision_feature_select_strategy != "default" or not isinstance(cfg.vision_feature_layer, int):
            raise UnsupportedError("VisionZip here needs one vision feature layer and the 'default' (CLS dropped) strategy")
        tower = runner.inner.vision_tower
        layers = tower.vision_model.encoder.layers if hasattr(tower, "vision_model") else tower.encoder.layers
        fl = cfg.vision_feature_layer
        li = fl if fl >= 0 else len(layers) + 1 + fl  # hidden_states[fl] is the output of encoder layer li - 1
        got = {}

        def hook(module, args, kwargs, output):
            got["attn"] = hf_self_attention(module, args, kwargs)

        hnd = layers[li - 1].self_attn.register_forward_hook(hook, with_kwargs=True)
        try:
            out = tower(batch.inputs["pixel_values"], output_hidden_states=True, return_dict=True)
        finally:
            hnd.remove()
        hid = out.hidden_states[fl][:, 1:]                       # [n, N, Dv]
        cls_attn = got["attn"][:, :, 0, 1:].float().mean(1)     # [n, N]
        n, N, _ = hid.shape
        k = self.n_keep(N)
        k_c = min(k, int(round(self.contextual * k))) if k > 1 else 0
        k_d = k - k_c
        keep = torch.zeros(n, N, dtype=torch.bool, device=hid.device)
        merged = hid.clone()
        sizes = torch.ones(n, N, device=hid.device)
        for i in range(n):
            dom = cls_attn[i].topk(k_d).indices if k_d else cls_attn[i][:0].long()
            keep[i, dom] = True
            rest = (~keep[i]).nonzero().flatten()
            if k_c and len(rest):
                targets = rest[torch.linspace(0, len(rest) - 1, k_c, device=hid.device).round().long().unique()]
                others = rest[~torch.isin(rest, targets)]
                keep[i, targets] = True
                if len(others):
                    f = torch.nn.functional.normalize(hid[i].float(), dim=-1)
                    near = (f[others] @ f[targets].T).argmax(1)
                    for j, t in enumerate(targets.tolist()):
                        group = torch.cat([hid[i, t:t + 1], hid[i, others[near == j]]])
                        merged[i, t] = group.mean(0)
                        sizes[i, t] = len(group)
        feats = runner.inner.multi_modal_projector(merged)
        return feats, keep, (sizes if self.proportional else None)
