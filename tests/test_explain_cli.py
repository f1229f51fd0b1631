"""`vlinterp explain` and `vlinterp bench saliency` on tiny models: outputs, atomicity, bad inputs.

A stub method ("stub_colour": per-patch colour saturation of the input, a known map) is
registered into the saliency registry for the atomicity and output-format checks; the real
methods run through the same command in the real-registry tests.
"""
import json
import os
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from cli_util import run_cli
from vlinterp.cli import main
from vlinterp.core.result import Result



class StubColour:
    """Patch score = mean saturation of the image pixels under the patch (a known, real map)."""

    name = "stub_colour"
    kinds = ("vlm", "vit", "clip", "diffusion")

    @dataclass
    class Config:
        layers: tuple[int, ...] | None = None
        fail: bool = False

    def __init__(self, adapter, config=None, **opts):
        self.adapter, self.config = adapter, config or self.Config(**opts)

    def attribute(self, batch, target=None, image_index=0):
        if self.config.fail:
            raise RuntimeError("stub failure in the middle of explain")
        stream = "unet" if self.adapter.kind == "diffusion" else batch.main
        L = batch.layouts[stream]
        g = L.images[image_index]
        img = np.asarray(batch.images[image_index] if batch.images else np.zeros((*g.size, 3), np.uint8), np.float32)
        sat = img.max(-1) - img.min(-1)
        t = g.tiles[0]
        (rows, cols), (x0, y0, x1, y1) = t.grid, t.box
        ys = np.clip(np.linspace(y0, y1, rows + 1).round().astype(int), 0, g.size[0])
        xs = np.clip(np.linspace(x0, x1, cols + 1).round().astype(int), 0, g.size[1])
        grid = np.array([[sat[ys[r]:max(ys[r + 1], ys[r] + 1), xs[c]:max(xs[c + 1], xs[c] + 1)].mean() for c in range(cols)] for r in range(rows)])
        n = len(target) if isinstance(target, (list, tuple)) else 1
        labels = [str(x) for x in target] if isinstance(target, (list, tuple)) else [str(target)]
        scores = np.tile(grid.reshape(1, -1), (n, 1)).astype(np.float32)
        return Result("stub_colour", {"scores": scores}, L, labels, image_index, {"method": "stub_colour", "layers": self.config.layers})


class StubFail(StubColour):
    name = "stub_fail"

    @dataclass
    class Config(StubColour.Config):
        fail: bool = True


@pytest.fixture
def stub_registry(monkeypatch):
    """Make `stub_colour` (and a failing `stub_fail`) resolvable by explain/bench, for this test only."""
    from vlinterp import saliency

    for name, cls in (("stub_colour", StubColour), ("stub_fail", StubFail)):
        monkeypatch.setitem(saliency.REGISTRY._targets, name, cls)
        monkeypatch.setitem(saliency.REGISTRY._loaded, name, cls)
    return saliency


@pytest.fixture
def scene_png(tmp_path):
    from vlinterp.data import make_scene

    s = make_scene("test-explain", 0, 3)
    p = tmp_path / "scene.png"
    s.pil().save(p)
    return p, s


def test_explain_llava_outputs(stub_registry, scene_png, tmp_path, capsys):
    p, scene = scene_png
    out, npy = tmp_path / "exp", tmp_path / "heat.npy"
    rc = main(["explain", str(p), "--prompt", "what color is the circle?", "--model", "tiny:llava", "--method", "stub_colour",
               "--out", str(out), "--save-heatmap", str(npy), "--max-new-tokens", "3"])
    assert rc == 0, capsys.readouterr().err
    files = sorted(f for f in os.listdir(out) if f != ".vlinterp-manifest.json")
    assert files == ["overlay.png", "report.html", "result.json", "tokens"]
    res = json.loads((out / "result.json").read_text())
    n = len(res["answer_token_ids"])
    assert 1 <= n <= 3 and len(res["targets"]) == len(res["scores"]) == n == len(os.listdir(out / "tokens"))
    assert res["method"] == "stub_colour" and isinstance(res["answer"], str)
    assert res["layout"]["grid"] == [[4, 4]] and len(res["scores"][0]) == 16 and res["layout"]["image_size"] == [128, 128]
    hm = np.load(npy)
    assert hm.shape == (128, 128) and hm.dtype == np.float32
    # overlay.png is a figure (title, answer, colour bar) holding the overlay, enlarged by a whole factor
    from vlinterp.viz import overlay
    from vlinterp.viz.figure import overlay_box

    ov = np.asarray(Image.open(out / "overlay.png").convert("RGB"))
    x0, y0, x1, y1 = overlay_box((128, 128))
    s = (x1 - x0) // 128
    assert ov.shape[0] > y1 and ov.shape[1] > x1 + 14 and s >= 2
    assert np.array_equal(ov[y0:y1:s, x0:x1:s], overlay(Image.open(p), hm))
    assert ov[:y0].std() > 10 and ov[y0:y1, x1 + 10:x1 + 24].std() > 20  # a title above, a colour bar beside
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and 'id="overlay"' in html and "<button" in html and 'id="view"' in html
    assert "http://" not in html and "https://" not in html  # self-contained
    # the stub map is the image saturation: the heat map peaks on an object
    objs = np.any([o.mask for o in scene.objects], 0)
    from vlinterp.metrics import pointing_game

    assert pointing_game(hm, objs, tolerance=16) == 1.0
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_explain_replaces_dir_atomically_and_keeps_old_on_error(stub_registry, scene_png, tmp_path, capsys):
    p, _ = scene_png
    out = tmp_path / "exp"
    args = ["explain", str(p), "--prompt", "what color is the circle?", "--model", "tiny:llava", "--out", str(out), "--max-new-tokens", "2"]
    assert main(args + ["--method", "stub_colour"]) == 0
    assert main(args + ["--method", "stub_colour", "--save-heatmap", str(out / "heat.npy")]) == 0
    um = os.umask(0)
    os.umask(um)
    assert (out / "heat.npy").exists() and (out / "report.html").stat().st_mode & 0o777 == 0o666 & ~um
    assert out.stat().st_mode & 0o777 == 0o777 & ~um
    before = {f: (out / f).stat().st_mtime_ns for f in ("overlay.png", "result.json", "report.html")}
    with pytest.raises(RuntimeError, match="stub failure"):
        main(args + ["--method", "stub_fail"])
    assert {f: (out / f).stat().st_mtime_ns for f in before} == before
    new = tmp_path / "never"
    with pytest.raises(RuntimeError):
        main(["explain", str(p), "--prompt", "what color is the circle?", "--model", "tiny:llava", "--out", str(new), "--method", "stub_fail"])
    assert not new.exists() and not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    code, _, err = run_cli(args + ["--method", "no_such_method"], capsys)
    assert code == 2 and "unknown saliency method" in err


def _bad_images(tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    tiny = tmp_path / "one.png"
    Image.new("RGB", (1, 1)).save(tiny)
    return {"corrupt": corrupt, "text": text, "1x1": tiny, "missing": tmp_path / "missing.png"}


@pytest.mark.parametrize("kind", ["corrupt", "text", "1x1", "missing"])
def test_explain_bad_images_named_error_no_dir(stub_registry, tmp_path, kind, capsys):
    path = _bad_images(tmp_path)[kind]
    out = tmp_path / "exp"
    rc, _, err = run_cli(["explain", str(path), "--prompt", "what color is the circle?", "--model", "tiny:llava", "--method", "stub_colour",
                          "--out", str(out)], capsys)
    assert rc == 2 and "error:" in err and "Traceback" not in err and os.path.basename(str(path)) in err
    assert not out.exists() and not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


@pytest.mark.parametrize("mode", ["RGBA", "I;16", "L", "P"])
def test_explain_converts_modes(stub_registry, tmp_path, mode):
    a = np.zeros((96, 80, 3), np.uint8)
    a[20:50, 10:40] = (220, 40, 40)
    img = Image.fromarray(a)
    if mode == "RGBA":
        img = img.convert("RGBA")
    elif mode == "I;16":
        img = Image.fromarray(a[..., 0].astype(np.uint16) * 257)
    else:
        img = img.convert(mode)
    p = tmp_path / f"img_{mode.replace(';', '')}.png"
    img.save(p)
    out, npy = tmp_path / "exp", tmp_path / "h.npy"
    assert main(["explain", str(p), "--prompt", "what color is the square?", "--model", "tiny:llava", "--method", "stub_colour",
                 "--out", str(out), "--save-heatmap", str(npy), "--max-new-tokens", "1"]) == 0
    assert np.load(npy).shape == (96, 80)


def test_explain_vit_clip_diffusion(stub_registry, scene_png, tmp_path):
    p, _ = scene_png
    assert main(["explain", str(p), "--model", "tiny:vit", "--method", "stub_colour", "--target", "2", "--out", str(tmp_path / "v")]) == 0
    rv = json.loads((tmp_path / "v" / "result.json").read_text())
    assert rv["class_index"] == 2 and len(rv["scores"]) == 1
    assert main(["explain", str(p), "--model", "tiny:clip", "--method", "stub_colour", "--text", "a red circle", "--text", "a blue square",
                 "--out", str(tmp_path / "c")]) == 0
    rc = json.loads((tmp_path / "c" / "result.json").read_text())
    assert rc["targets"] == ["a red circle", "a blue square"] and rc["answer"] in rc["targets"]
    assert main(["explain", "--model", "tiny:clip", "--method", "stub_colour", "--text", "x", "--out", str(tmp_path / "c2")]) == 2
    assert main(["explain", "--model", "tiny:diffusion", "--prompt", "a red circle", "--word", "circle",
                 "--out", str(tmp_path / "d"), "--steps", "2", "--save-heatmap", str(tmp_path / "d.npy")]) == 0
    rd = json.loads((tmp_path / "d" / "result.json").read_text())
    assert rd["answer"] == "circle" and rd["targets"] == ["circle"] and rd["method"] == "daam"
    from vlinterp.viz.figure import overlay_box

    x0, y0, x1, y1 = overlay_box(tuple(rd["layout"]["image_size"]))
    gen = np.asarray(Image.open(tmp_path / "d" / "overlay.png"))
    assert gen.shape[0] > y1 and gen.shape[1] > x1 and tuple(rd["layout"]["image_size"]) == np.load(tmp_path / "d.npy").shape
    assert main(["explain", "--model", "tiny:diffusion", "--prompt", "a red circle", "--out", str(tmp_path / "d2")]) == 2


def test_bench_saliency_stub(stub_registry, tmp_path, capsys):
    j = tmp_path / "b.json"
    assert main(["bench", "saliency", "--model", "tiny:vit", "--methods", "stub_colour", "--n", "2", "--steps", "4", "--json", str(j)]) == 0
    out = capsys.readouterr().out
    for col in ("pointing", "deletion AUC", "insertion AUC", "Obj-IoU", "s/image", "random", "centre", "stub_colour"):
        assert col in out
    res = json.loads(j.read_text())
    assert set(res["rows"]) == {"stub_colour", "random", "centre"}
    r = res["rows"]["stub_colour"]
    assert 0 <= r["pointing_game"] <= 1 and 0 <= r["deletion_auc"] <= 1 and r["n"] == res["items"] > 0
    # the saturation map points at objects far better than chance
    assert r["pointing_game"] >= res["rows"]["random"]["pointing_game"]


def test_explain_real_methods_views(scene_png, tmp_path):
    """The real registry: default method (relevancy), compared methods and per-layer views."""
    p, _ = scene_png
    out = tmp_path / "real"
    assert main(["explain", str(p), "--prompt", "what color is the circle?", "--model", "tiny:llava", "--out", str(out),
                 "--compare", "attention,rollout", "--per-layer", "--max-new-tokens", "2"]) == 0
    res = json.loads((out / "result.json").read_text())
    names = [v["name"] for v in res["views"]]
    assert names == ["relevancy", "attention", "rollout", "relevancy / layer 0", "relevancy / layer 1"]
    assert res["meta"]["method"] == "relevancy" and len(res["scores"]) == len(res["answer_token_ids"])
    html = (out / "report.html").read_text()
    assert all(f">{n}</option>" in html for n in names)
    assert main(["explain", str(p), "--model", "tiny:vit", "--method", "gradcam", "--layers", "0,1", "--out", str(tmp_path / "g")]) == 2


@pytest.mark.slow
def test_bench_saliency_real_methods(tmp_path, capsys):
    j = tmp_path / "b.json"
    assert main(["bench", "saliency", "--model", "tiny:clip", "--methods", "attention,rollout", "--n", "1", "--steps", "4", "--json", str(j)]) == 0
    res = json.loads(j.read_text())
    assert set(res["rows"]) == {"attention", "rollout", "random", "centre"} and res["items"] >= 1
    assert main(["bench", "saliency", "--model", "tiny:clip", "--methods", "daam", "--n", "1"]) == 2
    assert "does not support clip" in capsys.readouterr().err
