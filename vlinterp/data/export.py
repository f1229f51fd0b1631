"""Export a fixed split of the shapes world to disk (PNG images + JSONL).

Layout written by ``export_split(out_dir, name, n, seed)``::

    out_dir/{name}.jsonl              one JSON record per scene
    out_dir/images/{name}_{i:04d}.png the scene images

Each record holds ``split, seed, index, image, background, objects`` (shape,
colour, rgb, bbox; masks are recovered exactly from the PNG, since objects are
painted in a single flat colour that never equals the gray background),
``caption`` and ``questions`` (see :mod:`vlinterp.data.questions`).

Everything is first written to a temporary directory inside ``out_dir`` and
then moved into place with ``os.replace``; the JSONL (the index of the split)
is moved last, so a reader never sees a JSONL naming missing images.

Usage: ``python -m vlinterp.data.export [out_dir] [name] [n] [seed]``
(defaults: ``datasets/shapes heldout 64 0``).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import numpy as np
from PIL import Image

from ..core.io import check_output_file, record_written, written_by_vlinterp
from .questions import QA, caption, make_questions
from .shapes import Obj, Scene, make_split, scene_rng

__all__ = ["export_split", "load_split", "scene_record"]

QUESTION_NEG_TYPE = "adversarial"


def scene_record(scene: Scene, image_path: str) -> dict:
    rng = scene_rng(scene.split, scene.seed, scene.index, 99)
    qas = make_questions(scene, rng, neg_type=QUESTION_NEG_TYPE)
    return {
        "split": scene.split, "seed": scene.seed, "index": scene.index,
        "image": image_path, "background": scene.background,
        "objects": [{"shape": o.shape, "colour": o.colour, "rgb": list(o.rgb),
                     "bbox": list(o.bbox)} for o in scene.objects],
        "caption": caption(scene),
        "questions": [q.to_dict() for q in qas],
    }


def export_split(out_dir: str | os.PathLike, name: str = "heldout", n: int = 64,
                 seed: int = 0, prior: bool = True) -> str:
    """Write ``n`` scenes of split ``name`` under ``out_dir``; returns the JSONL path.

    Files of an earlier export (recorded in each folder's vlinterp manifest) are replaced, and
    its images beyond ``n`` removed; a file in the way that vlinterp did not write stops the
    export before anything is written (:class:`~vlinterp.core.errors.OutputError`)."""
    out_dir = os.fspath(out_dir)
    img_dir = os.path.join(out_dir, "images")
    final = check_output_file(os.path.join(out_dir, f"{name}.jsonl"))
    keep = [f"{name}_{i:04d}.png" for i in range(n)]
    for fn in keep:
        check_output_file(os.path.join(img_dir, fn))
    os.makedirs(img_dir, exist_ok=True)
    scenes = make_split(name, n, seed, prior)
    tmp = tempfile.mkdtemp(prefix=f".tmp_{name}_", dir=out_dir)
    try:
        os.makedirs(os.path.join(tmp, "images"))
        lines = []
        for s, fn in zip(scenes, keep):
            s.pil().save(os.path.join(tmp, "images", fn), format="PNG")
            lines.append(json.dumps(scene_record(s, f"images/{fn}"), sort_keys=True))
        jsonl_tmp = os.path.join(tmp, f"{name}.jsonl")
        with open(jsonl_tmp, "w") as f:
            f.write("\n".join(lines) + ("\n" if lines else ""))
        # stale images of an earlier, larger export of the same split (ours only)
        for fn in os.listdir(img_dir):
            path = os.path.join(img_dir, fn)
            if fn.startswith(f"{name}_") and fn.endswith(".png") and fn not in keep and written_by_vlinterp(path):
                os.remove(path)
        for fn in keep:
            os.replace(os.path.join(tmp, "images", fn), os.path.join(img_dir, fn))
        record_written([os.path.join(img_dir, fn) for fn in keep])
        os.replace(jsonl_tmp, final)
        record_written([final])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_split(jsonl_path: str | os.PathLike) -> list[tuple[Scene, list[QA]]]:
    """Read an exported split back: scenes (masks recovered from the PNGs) + questions."""
    jsonl_path = os.fspath(jsonl_path)
    root = os.path.dirname(os.path.abspath(jsonl_path))
    out = []
    with open(jsonl_path) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            image = np.asarray(Image.open(os.path.join(root, r["image"])).convert("RGB"))
            objs = []
            for o in r["objects"]:
                x0, y0, x1, y1 = o["bbox"]
                mask = np.zeros(image.shape[:2], dtype=bool)
                mask[y0:y1, x0:x1] = np.all(image[y0:y1, x0:x1] == o["rgb"], axis=-1)
                objs.append(Obj(o["shape"], o["colour"], tuple(o["rgb"]),
                                tuple(o["bbox"]), mask))
            scene = Scene(image.copy(), r["background"], objs, r["seed"], r["split"],
                          r["index"])
            out.append((scene, [QA.from_dict(q) for q in r["questions"]]))
    return out


if __name__ == "__main__":
    a = sys.argv[1:]
    path = export_split(a[0] if a else "datasets/shapes", a[1] if len(a) > 1 else "heldout",
                        int(a[2]) if len(a) > 2 else 64, int(a[3]) if len(a) > 3 else 0)
    print(path)
