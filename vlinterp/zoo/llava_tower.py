"""Stage 1 of shapes-llava: contrastive (CLIP) pretraining of the vision tower, the LLaVA recipe,
plus dense auxiliary heads (per-patch soft colour/shape on the LLaVA feature layer; shape counts
and the 24-way pair multi-hot on CLS). Rendered-word images join the contrastive batch with the
same caption (and the CLS heads), so the tower learns to read them too."""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.questions import caption
from ..data.shapes import COLOURS, SHAPES
from .common import cosine_lr, set_lr
from .llava_data import normalise


def text_config(vocab_size: int, d: int, eos_token_id: int = 3):
    """The contrastive text tower's ``CLIPTextConfig`` (2 layers of width ``d``); pooled at ``eos_token_id``."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=d, intermediate_size=2 * d, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=48, projection_dim=d, pad_token_id=0,
                          bos_token_id=2, eos_token_id=eos_token_id)


class TowerTrainer(nn.Module):
    """A CLIP vision tower (shapes-llava's) with its contrastive text side and the dense heads.

    Subclasses for other towers override :meth:`encode` and :meth:`vision_state` and give ``self.clip``
    the text side (``text_model``, ``text_projection``, ``visual_projection``, ``logit_scale``)."""

    def __init__(self, vision_config, vocab_size: int, feature_layer: int = -2):
        super().__init__()
        from transformers import CLIPConfig, CLIPModel

        d = vision_config.hidden_size
        tc = text_config(vocab_size, d)
        cfg = CLIPConfig(text_config=tc.to_dict(), vision_config=vision_config.to_dict(), projection_dim=d)
        self.clip = CLIPModel(cfg)
        self.feature_layer = feature_layer
        self.add_heads(d)

    def add_heads(self, d: int) -> None:
        """Per-patch colour (6 + background) and shape heads; shape-count and 24-way pair heads on the pooled vector."""
        self.colour = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, len(COLOURS) + 1))
        self.shape = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, len(SHAPES)))
        self.count = nn.Linear(d, len(SHAPES) * 5)
        self.pair = nn.Linear(d, 24)

    def encode(self, px):
        """Normalised pixels ``[B, 3, H, W]`` -> (pooled ``[B, d]``, patch features ``[B, P, d]`` in row-major
        order, the order of the pool's dense targets)."""
        out = self.clip.vision_model(pixel_values=px, output_hidden_states=True)
        return out.pooler_output, out.hidden_states[self.feature_layer][:, 1:]

    def vision_state(self) -> dict:
        """The trained tower's weights, keyed as the organism's vision module expects them."""
        return self.clip.vision_model.state_dict()

    def forward(self, px, ids, tmask, same, dense, colour_t, shape_t, cover, counts, pairs):
        pooled, feat = self.encode(px)
        img = F.normalize(self.clip.visual_projection(pooled), dim=-1)
        txt = self.clip.text_model(input_ids=ids, attention_mask=tmask).pooler_output
        txt = F.normalize(self.clip.text_projection(txt), dim=-1)
        logits = self.clip.logit_scale.exp().clamp(max=100) * img @ txt.t()
        tgt = same / same.sum(1, keepdim=True)
        l_clip = 0.5 * (-(tgt * logits.log_softmax(1)).sum(1).mean() - (tgt.t() * logits.t().log_softmax(1)).sum(1).mean())
        fd = feat[dense]
        l_col = -(colour_t * self.colour(fd).log_softmax(-1)).sum(-1).mean()
        l_shp = (-(shape_t * self.shape(fd).log_softmax(-1)).sum(-1) * cover).sum() / cover.sum().clamp(min=1)
        l_cnt = F.cross_entropy(self.count(pooled).view(-1, 5), counts.clamp(max=4).view(-1))
        pl = self.pair(pooled)
        l_pair = F.binary_cross_entropy_with_logits(pl, pairs)
        loss = l_clip + l_col + 3 * l_shp + l_cnt + 4 * l_pair
        with torch.no_grad():
            exact = ((pl > 0).float() == pairs).all(1).float().mean()
        return loss, {"clip": l_clip.item(), "col": l_col.item(), "shp": l_shp.item(), "cnt": l_cnt.item(),
                      "pair": l_pair.item(), "exact": exact.item()}


def train_tower(pool, vision_config, tokenizer, device, steps: int, batch: int, seconds: float, lr: float = 1e-3,
                seed: int = 0, log=print, rendered_frac: float = 0.15, trainer=TowerTrainer):
    """Train the tower on ``pool``; return its trained state (:meth:`TowerTrainer.vision_state`: for
    shapes-llava the ``CLIPVisionModel``-compatible ``vision_model`` submodule) and the last metrics.

    ``trainer(vision_config, vocab_size)`` builds the :class:`TowerTrainer` (or subclass) to train."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 101)
    m = trainer(vision_config, len(tokenizer)).to(device)
    opt = torch.optim.AdamW(m.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.05)
    N = len(pool["scenes"])
    caps = [caption(s) for s in pool["scenes"]]
    enc = tokenizer(caps, add_special_tokens=True)["input_ids"]
    L = max(len(e) for e in enc) + 1
    cap_ids = torch.zeros((N, L), dtype=torch.long)
    for i, e in enumerate(enc):
        cap_ids[i, :len(e) + 1] = torch.tensor(e + [tokenizer.eos_token_id])
    cap_ids = cap_ids.to(device)
    _, cap_group = np.unique(np.array(caps), return_inverse=True)
    cap_group = torch.as_tensor(cap_group, device=device)
    px, rpx = torch.as_tensor(pool["px"]).to(device), torch.as_tensor(pool["rpx"]).to(device)
    colour_t, shape_t = torch.as_tensor(pool["colour"]).to(device), torch.as_tensor(pool["shape"]).to(device)
    cover, counts = torch.as_tensor(pool["cover"]).to(device), torch.as_tensor(pool["counts"]).to(device)
    pairs = torch.as_tensor(pool["pairs"]).to(device)
    amp = device.type == "cuda"
    t0, stats = time.time(), {}
    n_r = max(1, int(batch * rendered_frac))
    for step in range(steps):
        if time.time() - t0 > seconds:
            log(f"tower: time budget reached at step {step}")
            break
        set_lr(opt, cosine_lr(int(steps * max(step / steps, (time.time() - t0) / seconds)), steps, lr, warmup=min(200, steps // 10 + 1)))
        i = torch.as_tensor(rng.integers(0, N, batch - n_r), device=device)
        j = torch.as_tensor(rng.integers(0, N, n_r), device=device)
        allidx = torch.cat([i, j])
        x = normalise(torch.cat([px[i], rpx[j]]))
        ids = cap_ids[allidx]
        g = cap_group[allidx]
        same = (g[:, None] == g[None, :]).float()
        dense = torch.zeros(batch, dtype=torch.bool, device=device)
        dense[: batch - n_r] = True
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, stats = m(x, ids, (ids != 0).long(), same, dense, colour_t[i], shape_t[i], cover[i], counts[allidx],
                            pairs[allidx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        if step % 200 == 0 or step == steps - 1:
            log(f"tower step {step}/{steps} loss {loss.item():.3f} " + " ".join(f"{k} {v:.3f}" for k, v in stats.items())
                + f" ({time.time() - t0:.0f}s)")
    return m.vision_state(), stats
