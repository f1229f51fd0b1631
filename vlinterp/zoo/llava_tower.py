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


class TowerTrainer(nn.Module):
    def __init__(self, vision_config, vocab_size: int, feature_layer: int = -2):
        super().__init__()
        from transformers import CLIPConfig, CLIPModel, CLIPTextConfig

        d = vision_config.hidden_size
        tc = CLIPTextConfig(vocab_size=vocab_size, hidden_size=d, intermediate_size=2 * d, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=48, projection_dim=d, pad_token_id=0,
                            bos_token_id=2, eos_token_id=3)
        cfg = CLIPConfig(text_config=tc.to_dict(), vision_config=vision_config.to_dict(), projection_dim=d)
        self.clip = CLIPModel(cfg)
        self.feature_layer = feature_layer
        self.colour = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, len(COLOURS) + 1))
        self.shape = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, len(SHAPES)))
        self.count = nn.Linear(d, len(SHAPES) * 5)
        self.pair = nn.Linear(d, 24)

    def forward(self, px, ids, tmask, same, dense, colour_t, shape_t, cover, counts, pairs):
        out = self.clip.vision_model(pixel_values=px, output_hidden_states=True)
        pooled = out.pooler_output
        feat = out.hidden_states[self.feature_layer][:, 1:]
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
                seed: int = 0, log=print, rendered_frac: float = 0.15):
    """Train the CLIP tower on ``pool``; return the trained ``CLIPVisionModel``-compatible state (the
    ``vision_model`` submodule) and the last metrics."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 101)
    m = TowerTrainer(vision_config, len(tokenizer)).to(device)
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
    return m.clip.vision_model.state_dict(), stats
