"""Visual contrastive decoding (VCD): contrast the next-token logits on the image against those
on a diffusion-noised copy, within an adaptive plausibility cutoff.

``logits = (1 + alpha) * l(image) - alpha * l(noised image)`` over the tokens whose probability on
the clean image is at least ``beta`` x the top token's; every other token gets ``-inf``. The
noised image is the processed pixels taken to step ``noise_step`` of a 1000-step DDPM linear
schedule (``sqrt(abar) x + sqrt(1 - abar) eps``, seeded). Costs a second forward per token.
"""
from __future__ import annotations

import torch

from ..core.errors import UnsupportedError


class VCD:
    def __init__(self, alpha: float = 1.0, beta: float = 0.1, noise_step: int = 500, seed: int = 0):
        if not 0 <= noise_step < 1000:
            raise ValueError(f"noise_step must be in 0..999, got {noise_step}")
        self.alpha, self.beta, self.noise_step, self.seed = float(alpha), float(beta), int(noise_step), int(seed)

    def noised(self, px: torch.Tensor) -> torch.Tensor:
        betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
        abar = float(torch.cumprod(1 - betas, 0)[self.noise_step])
        g = torch.Generator().manual_seed(self.seed)
        eps = torch.randn(tuple(px.shape), generator=g).to(px.device, px.dtype)
        return abar ** 0.5 * px + (1 - abar) ** 0.5 * eps

    def contrast(self, clean: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        """``[B, V]`` contrasted logits from the two ``[B, V]`` logit rows."""
        p = clean.float().softmax(-1)
        keep = p >= self.beta * p.max(-1, keepdim=True).values
        out = (1 + self.alpha) * clean.float() - self.alpha * noisy.float()
        return out.masked_fill(~keep, float("-inf"))

    def last_logits(self, adapter, batch) -> torch.Tensor:
        """Contrasted logits at each row's last prompt position ``[B, V]``."""
        if adapter.kind != "vlm":
            raise UnsupportedError(f"VCD needs a LLaVA model, not {adapter.family}")
        rows = torch.arange(batch.layout.shape[0])
        last = torch.tensor([int(batch.layout.span("last", r)[0]) for r in rows.tolist()])
        with torch.no_grad():
            lc = adapter.run(batch).logits[rows, last]
            ln = adapter.run(batch.replace_inputs(pixel_values=self.noised(batch.inputs["pixel_values"]))).logits[rows, last]
        return self.contrast(lc, ln)

    def choose(self, adapter, items, candidates: list[str], batch_size: int = 32) -> list[str]:
        """As :func:`vlinterp.metrics.pope.choose`, on contrasted logits."""
        ids = torch.tensor([adapter.token_id(c) for c in candidates])
        out = []
        for i in range(0, len(items), batch_size):
            ch = items[i:i + batch_size]
            b = adapter.prepare(images=[im for im, _ in ch], text=[t for _, t in ch])
            out += [candidates[j] for j in self.last_logits(adapter, b)[:, ids].argmax(-1).tolist()]
        return out

    def generate(self, adapter, batch, max_new_tokens: int = 8) -> list[str]:
        """Greedy VCD decoding (full recompute per step; for short answers)."""
        batch = adapter._on_device(batch)
        ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"]
        px = batch.inputs["pixel_values"]
        pxn = self.noised(px)
        eos = adapter.tokenizer.eos_token_id
        img_tok = getattr(adapter.config, "image_token_index", getattr(adapter.config, "image_token_id", None))
        new = []
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        with torch.no_grad():
            for _ in range(max_new_tokens):
                kw = {k: v for k, v in batch.inputs.items() if k not in ("input_ids", "attention_mask", "pixel_values")}
                lc = adapter.model(input_ids=ids, attention_mask=mask, pixel_values=px, **kw).logits[:, -1]
                ln = adapter.model(input_ids=ids, attention_mask=mask, pixel_values=pxn, **kw).logits[:, -1]
                scores = self.contrast(lc, ln)
                if img_tok is not None:  # an image placeholder in the text would break the next forward
                    scores[:, img_tok] = float("-inf")
                scores[torch.isinf(scores).all(-1), 0] = 0.0  # a row with nothing left: fall back to token 0
                nxt = scores.argmax(-1)
                nxt = torch.where(done, torch.full_like(nxt, eos if eos is not None else 0), nxt)
                new.append(nxt)
                done |= nxt == eos
                ids = torch.cat([ids, nxt[:, None]], 1)
                mask = torch.cat([mask, torch.ones_like(nxt)[:, None]], 1)
                if done.all():
                    break
        toks = torch.stack(new, 1).cpu()
        return [adapter.tokenizer.decode(r, skip_special_tokens=True).strip() for r in toks]


__all__ = ["VCD"]
