"""Modality audit: end to end on shapes-llava (all measures present), a planted inconsistency is
detected, user JSONL on a tiny LLaVA (a malformed line stops the run naming file:line), CLI with the
HTML report."""
import json
import os

import pytest

import vlinterp as vi
from vlinterp.audit import audit, load_items, projector_noise, renderings, shapes_items

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "datasets", "audit_fixture", "items.jsonl")


@pytest.fixture(scope="module")
def items():
    return shapes_items(36, 17)


@pytest.fixture(scope="module")
def clean(shapes_llava, items):
    return audit(shapes_llava, items, embedder=vi.load("shapes-clip"), progress=False)


def test_renderings_of_one_item(items):
    rs = renderings(items[0])
    names = [r.name for r in rs]
    assert names[:3] == ["text", "image", "rendered"]
    assert any(n.startswith("rendered:font_size=") for n in names) and any(n.startswith("rendered:resolution=") for n in names)
    text = rs[0]
    assert text.image is None and items[0].context in text.prompt
    res = {r.name: r for r in rs}
    assert res["rendered:resolution=64"].image.size == (64, 64)


@pytest.mark.slow
def test_audit_reports_everything(clean):
    r = clean
    for k in ("text", "image", "rendered", "mixed"):
        assert 0 <= r["accuracy"][k] <= 1
    assert r["accuracy"]["image"] >= 0.85 and r["accuracy"]["text"] >= 0.8
    assert 0 < r["render_equivalence"] <= 1
    assert set(r["pair_agreement"]) >= {"text|image", "text|rendered", "image|rendered"}
    assert r["ocr"]["n_correct"] > 0 and r["ocr"]["render_equivalence_on_ocr_correct"] is not None
    assert set(r["factors"]) == {"font_size", "colour", "resolution"}
    assert r["similarity_vs_consistency"]["source"] == "embedder"
    L = 4
    assert len(r["inside"]["layer_cosine"]["text|image"]) == L and len(r["inside"]["logit_lens"]["image"]) == L
    # the logit lens reads the answer better at the top than at the bottom
    assert r["inside"]["logit_lens"]["image"][-1] > r["inside"]["logit_lens"]["image"][0]


@pytest.mark.slow
def test_planted_inconsistency_is_detected(shapes_llava, items, clean):
    planted = audit(shapes_llava, items, factors=False, edits=projector_noise(3.0), progress=False)
    assert planted["accuracy"]["image"] <= clean["accuracy"]["image"] - 0.2
    assert planted["render_equivalence"] <= clean["render_equivalence"] - 0.15
    assert abs(planted["accuracy"]["text"] - clean["accuracy"]["text"]) < 1e-9, "text-only prompts never pass the projector"
    c0, c1 = clean["inside"]["layer_cosine"]["text|image"], planted["inside"]["layer_cosine"]["text|image"]
    assert max(abs(a - b) for a, b in zip(c0, c1)) > 0.05, "the layer-divergence curve must move"
    # no hooks left behind
    b = shapes_llava.prepare(images=[items[0].image], text=[items[0].question])
    assert shapes_llava.run(b).logits.shape[0] == 1 and not shapes_llava.model.model.multi_modal_projector._forward_hooks


def _good_lines(tmp_path):
    """The fixture's well-formed lines (1, 2 and 5) in a file of their own, beside the images."""
    lines = open(FIXTURE).read().splitlines()
    path = os.path.join(os.path.dirname(FIXTURE), "..", "..", "datasets", "audit_fixture")
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(lines[i] for i in (0, 1, 4)) + "\n")
    return str(good), os.path.abspath(path)


def test_user_jsonl_on_tiny_llava_and_malformed_lines_named(tmp_path):
    from vlinterp.core.errors import DataError

    with pytest.raises(DataError, match=r"items.jsonl:3: not JSON"):
        load_items(FIXTURE)
    good, image_dir = _good_lines(tmp_path)
    items = load_items(good, image_dir)
    assert [it.id for it in items] == ["s0", "s1", "text-only"]
    res = audit(vi.load("tiny:llava"), items, factors=False, progress=False)
    assert res["n_items"] == 3 and set(res["accuracy"]) >= {"text", "rendered", "mixed"}
    assert res["per_item"][2]["answers"]["image"] is None  # the text-only item has no image rendering


@pytest.mark.slow
def test_cli_writes_json_and_report(tmp_path, capsys):
    from cli_util import run_cli
    from vlinterp.cli import main

    good, image_dir = _good_lines(tmp_path)
    js, rep = tmp_path / "a.json", tmp_path / "rep"
    rep.mkdir()
    (rep / "mine.txt").write_text("kept")  # an empty-but-for-my-file directory is refused ...
    assert run_cli(["audit", "--model", "tiny:llava", "--dataset", good, "--image-dir", image_dir, "--no-factors", "--json", str(js),
                    "--out", str(rep)], capsys)[0] == 2
    (rep / "mine.txt").unlink()
    assert main(["audit", "--model", "tiny:llava", "--dataset", good, "--image-dir", image_dir, "--no-factors", "--json", str(js),
                 "--out", str(rep), "--plant-noise", "3"]) == 0
    out = json.loads(js.read_text())
    assert out["n_items"] == 3 and "planted" in out
    html = (rep / "report.html").read_text()
    assert "render-equivalence" in html and (rep / "inside.png").exists() and (rep / "agreement.png").exists()
    # styled tables, and one row per item with its image, question, each rendering's answer and agreement
    import re

    assert "<pre>" not in html and "<style>" in html and html.count('<table class="t') >= 4
    rows = re.findall(r'<tr class="item (consistent|inconsistent)">(.*?)</tr>', html, re.S)
    assert len(rows) == 3 and [("data:image/png;base64," in r) for _, r in rows] == [True, True, False]
    assert all(re.search(r'<td class="(ok|bad)"', r) for _, r in rows)
    assert all(r["question"] in html for r in out["per_item"])
    assert [c for c, _ in rows] == ["consistent" if r["consistent"] else "inconsistent" for r in out["per_item"]]
    (rep / "notes.txt").write_text("mine")  # ... and a later run into it keeps the user's file
    assert main(["audit", "--model", "tiny:llava", "--dataset", good, "--image-dir", image_dir, "--no-factors", "--out", str(rep)]) == 0
    assert (rep / "notes.txt").read_text() == "mine" and (rep / "report.html").exists()
    capsys.readouterr()
    assert main(["audit", "--model", "tiny:llava", "--dataset", FIXTURE, "--no-factors", "--json", str(tmp_path / "b.json")]) == 2
    assert "items.jsonl:3: not JSON" in capsys.readouterr().err and not (tmp_path / "b.json").exists()
