"""What the explorer computes: images, answers, saliency maps, the attention browser.

One :class:`Workbench` holds the loaded model, the images the page knows (uploads and examples,
by content hash) and the answers given so far. Its ``*_job`` methods run on a job thread with the
model lock held (:mod:`.jobs`); :meth:`attention_view` and the image methods touch no model and
run anywhere. Causal tracing and SAE features live in :mod:`.tabs`.

Every map goes to the page as a :class:`vlinterp.viz.report.View` dictionary, the same one the
static ``report.html`` embeds: overlays per answer token, the answer's mean, colour ranges,
per-layer maps and the prompt words' scores.
"""
from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict

import numpy as np

from ..core.errors import ImageError, PromptError, UnsupportedError, UsageError

MAX_QUESTION = 500  # characters


class Workbench:
    """The model and what the page has asked of it. ``saes``: ``[(path, sae)]`` loaded SAEs
    (:func:`vlinterp.sae.attach.load_sae`); ``examples``: ``[(name, PIL image)]`` offered to pick."""

    def __init__(self, adapter, name: str, saes=(), examples=(), max_new_tokens: int = 12, alpha: float = 0.5,
                 colormap: str = "jet", max_images: int = 64):
        if adapter.kind != "vlm":
            raise UnsupportedError(f"vlinterp serve explores vision-language models (kind vlm); {name!r} is a {adapter.kind} model")
        self.m, self.name = adapter, name
        self.saes = list(saes)
        self.max_new_tokens, self.alpha, self.colormap = int(max_new_tokens), float(alpha), colormap
        self.images: OrderedDict[str, object] = OrderedDict()
        self.pinned: set[str] = set()
        self.max_images = int(max_images)
        self.answers: OrderedDict[tuple, dict] = OrderedDict()
        self.attn: OrderedDict[tuple, dict] = OrderedDict()
        self._lock = threading.Lock()
        self.examples = []
        for label, img in examples:
            iid = self._keep(img, pin=True)
            self.examples.append({"name": label, "id": iid})

    # ------------------------------------------------------------------ images
    def _keep(self, img, pin: bool = False) -> str:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        iid = hashlib.sha256(np.asarray(img).tobytes() + str(img.size).encode()).hexdigest()[:16]
        with self._lock:
            self.images[iid] = (img, buf.getvalue())
            self.images.move_to_end(iid)
            if pin:
                self.pinned.add(iid)
            for old in [k for k in self.images if k not in self.pinned][: max(0, len(self.images) - self.max_images)]:
                del self.images[old]
        return iid

    def add_image(self, data: bytes) -> dict:
        """Decode uploaded bytes (any mode is converted to RGB; :class:`ImageError` when they are not
        an image) and keep them; returns ``{"id", "width", "height"}``."""
        from ..core.images import load_image

        if not data:
            raise ImageError("the upload is empty: choose an image file")
        img = load_image(bytes(data), name="upload")
        iid = self._keep(img)
        return {"id": iid, "width": img.width, "height": img.height}

    def image(self, iid: str):
        """The PIL image of ``iid`` (:class:`UsageError` when unknown, e.g. forgotten after a restart)."""
        with self._lock:
            got = self.images.get(str(iid))
        if got is None:
            raise UsageError(f"unknown image {iid!r}: upload it again")
        return got[0]

    def image_png(self, iid: str) -> bytes:
        self.image(iid)
        return self.images[str(iid)][1]

    # --------------------------------------------------------------- questions
    @staticmethod
    def check_question(q) -> str:
        q = " ".join(str(q or "").split())
        if not q:
            raise PromptError("type a question about the image")
        if len(q) > MAX_QUESTION:
            raise PromptError(f"the question is too long ({len(q)} characters; at most {MAX_QUESTION})")
        return q

    def check_method(self, method: str) -> str:
        """``method`` when it is a saliency method for this model (:class:`UnknownNameError` with the nearest names)."""
        from ..core.errors import UnknownNameError

        names = self.methods()
        if method not in names:
            raise UnknownNameError("saliency method", str(method), names)
        return method

    def methods(self) -> list[str]:
        from .. import saliency

        return [n for n in saliency.names("vlm") if n not in saliency.WRAPPERS]

    def info(self) -> dict:
        sites = self.m.attention_sites("lm")
        return {"model": self.name, "family": self.m.family, "kind": self.m.kind, "layers": len(sites),
                "heads": self._heads(), "methods": self.methods(), "default_method": "relevancy",
                "examples": self.examples, "max_new_tokens": self.max_new_tokens}

    def _heads(self) -> int:
        cfg = getattr(self.m.config, "text_config", self.m.config)
        return int(getattr(cfg, "num_attention_heads", 0) or 0)

    # ------------------------------------------------------------------ answers
    def answer(self, iid: str, q: str) -> dict:
        """The greedy answer to ``q`` about image ``iid`` (kept): ``answer``, ``tokens``, ``ids``, ``probs``."""
        key = (iid, q)
        if key in self.answers:
            return self.answers[key]
        from ..saliency.explanation import SUBJECTS

        s = SUBJECTS["vlm"](self.m, self.image(iid), prompt=q, max_new_tokens=self.max_new_tokens)
        got = {"answer": s.answer, "tokens": s.info["answer_tokens"], "ids": s.info["answer_token_ids"],
               "probs": s.info["answer_probs"]}
        self.answers[key] = got
        while len(self.answers) > 256:
            self.answers.popitem(last=False)
        return got

    def targets(self, iid: str, q: str, method: str = "attention"):
        """The teacher-forced prompt + answer of ``(iid, q)`` as saliency targets (:class:`~vlinterp.saliency.targets.Targets`)."""
        from .. import saliency

        a = self.answer(iid, q)
        b = self.m.prepare(images=[self.image(iid)], text=[q])
        return saliency.create(method, self.m).resolve(b, a["ids"])

    def sequence(self, t) -> list[dict]:
        """The clickable tokens of the teacher-forced sequence: prompt words and answer tokens with positions."""
        from ..saliency.tokens import token_labels

        out = []
        for span in ("prompt", "answer"):
            pos = t.layout.span(span, 0) if span in t.layout.spans else None
            if pos is None or not len(pos):
                continue
            for p, lab in zip(pos.tolist(), token_labels(self.m, t.batch, pos)):
                out.append({"pos": int(p), "text": lab, "kind": span})
        return out

    # ------------------------------------------------------------------ job bodies
    def ask_job(self, job, iid: str, q: str, method: str) -> dict:
        """Answer, then the ``method`` maps of every answer token."""
        job.step(0, 3, "answering")
        a = self.answer(iid, q)
        job.step(1, 3, f"{method} maps")
        view = self.view(iid, q, method)
        job.step(2, 3, "rendering")
        t = self.targets(iid, q)
        return {"image": iid, "question": q, **{k: a[k] for k in ("answer", "tokens", "probs")}, "method": method,
                "view": view, "sequence": self.sequence(t)}

    def map_job(self, job, iid: str, q: str, method: str) -> dict:
        job.step(0, 2, "answering")
        self.answer(iid, q)
        job.step(1, 2, f"{method} maps")
        return {"image": iid, "question": q, "method": method, "view": self.view(iid, q, method)}

    def result(self, iid: str, q: str, method: str):
        """The ``method`` Result of the answer's tokens (one row per token)."""
        from .. import saliency

        a = self.answer(iid, q)
        b = self.m.prepare(images=[self.image(iid)], text=[q])
        return saliency.create(method, self.m).attribute(b, target=a["ids"])

    def view(self, iid: str, q: str, method: str) -> dict:
        from ..viz.report import view_from_result

        r = self.result(iid, q, method)
        rows = list(range(len(r.scores)))
        v = view_from_result(method, r, self.image(iid), self.alpha, self.colormap, answer_rows=rows).to_dict()
        v["text_positions"] = r.meta.get("text_positions")
        return v

    def attention_job(self, job, iid: str, q: str) -> dict:
        """Every language-model layer's attention rows at the answer tokens' queries, kept for
        :meth:`attention_view`; returns the browser's dimensions."""
        import torch

        job.step(0, 2, "answering")
        t = self.targets(iid, q)
        job.step(1, 2, "attention, every layer")
        sites = self.m.attention_sites("lm")
        layers = sorted(sites)
        A = self.m.attention(t.batch, layers, "lm", queries=list(t.queries))  # only the answer's rows
        rows = torch.stack([A[l][0].float().cpu() for l in layers])  # [L, H, n, T]
        entry = {"rows": rows.numpy(), "layers": layers, "layout": t.layout, "patches": t.patches.numpy(),
                 "labels": list(t.labels), "sequence": self.sequence(t), "queries": list(t.queries)}
        with self._lock:
            self.attn[(iid, q)] = entry
            while len(self.attn) > 16:
                self.attn.popitem(last=False)
        return {"image": iid, "question": q, "layers": layers, "heads": int(rows.shape[1]), "tokens": entry["labels"]}

    def attention_view(self, iid: str, q: str, layer, head, token) -> dict:
        """The attention of answer token ``token`` (index, or ``"all"``: their mean) at ``layer``
        and ``head`` (``"mean"``: averaged): an overlay over the image patches, the prompt words'
        weights and where the rest of the attention went."""
        from ..viz.overlay import data_uri, overlay

        with self._lock:
            e = self.attn.get((iid, q))
        if e is None:
            raise UsageError("run the attention browser for this question first")
        R = e["rows"]  # [L, H, n, T]
        L, H, n, T = R.shape
        li = _index(layer, e["layers"], "layer")
        hi = _index(head, list(range(H)), "head")
        ti = _index(token, list(range(n)), "token")
        x = R[li if li is not None else slice(None)]
        x = x.mean(0) if li is None else x                   # [H, n, T]
        x = x[hi] if hi is not None else x.mean(0)            # [n, T]
        row = x[ti] if ti is not None else x.mean(0)          # [T]
        lay, patches = e["layout"], e["patches"]
        hm = lay.to_heatmap(row[patches], 0)
        prompt = [s for s in e["sequence"] if s["kind"] == "prompt"]
        pw = [float(row[s["pos"]]) for s in prompt]
        mass_img = float(row[patches].sum())
        mass_prompt = float(sum(pw))
        return {"overlay": data_uri(overlay(self.image(iid), hm, self.alpha, self.colormap)),
                "range": [float(hm.min()), float(hm.max())],
                "tokens": [s["text"] for s in prompt], "weights": [round(w, 6) for w in pw],
                "mass": {"image": round(mass_img, 4), "prompt": round(mass_prompt, 4),
                         "other": round(max(0.0, float(row.sum()) - mass_img - mass_prompt), 4)},
                "layer": layer, "head": head, "token": token}


def _index(v, allowed: list, what: str):
    """``None`` for the mean (``"mean"``, ``"all"``, ``None``, ``-1``), else ``v``'s index in ``allowed``."""
    if v in (None, "mean", "all", "-1", -1, ""):
        return None
    try:
        i = int(v)
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be a number or 'mean', got {v!r}") from None
    if i not in allowed:
        raise UsageError(f"{what} {i} out of range ({allowed[0]}..{allowed[-1]})")
    return allowed.index(i)


def shapes_examples(n: int = 4) -> list:
    """A few scenes of the shapes world to pick from: ``[(name, PIL image)]``."""
    from ..data.shapes import make_scene

    return [(f"shapes scene {i}", make_scene("serve-examples", 0, i).pil()) for i in range(n)]


__all__ = ["Workbench", "shapes_examples", "MAX_QUESTION"]
