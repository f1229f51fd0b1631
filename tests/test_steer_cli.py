import json

import numpy as np
import pytest
from PIL import Image

from vlinterp.cli import main


def _img(tmp_path, name="x.png", seed=0):
    p = tmp_path / name
    Image.fromarray((np.random.RandomState(seed).rand(40, 40, 3) * 255).astype("uint8")).save(p)
    return p


@pytest.mark.slow
def test_steer_eval_and_generate_on_tiny(tmp_path, capsys):
    js = tmp_path / "t.json"
    assert main(["steer", "eval", "--model", "tiny:llava", "--methods", "none,vcd", "--n", "8", "--captions", "4", "--json", str(js)]) == 0
    table = json.loads(js.read_text())
    assert set(table) == {"none", "vcd"}
    for row in table.values():
        assert set(row) == {"random", "popular", "adversarial", "colour", "count", "chair", "fit_seconds", "eval_seconds"}
        assert set(row["chair"]) == {"chair_s", "chair_i", "mentions", "coverage"}
        assert set(row["adversarial"]) == {"accuracy", "precision", "recall", "f1", "yes_rate", "false_yes"}
    assert "adv false-yes" in capsys.readouterr().out
    img = _img(tmp_path)
    assert main(["steer", "generate", str(img), "--prompt", "describe the image.", "--model", "tiny:llava", "--method", "vcd",
                 "--max-new-tokens", "3"]) == 0


def test_steer_fit_then_eval_and_generate_load_the_fit(tmp_path, capsys, monkeypatch):
    """``steer fit`` saves a directory; ``eval --fit`` and ``generate --fit`` load it (no refit: fitting is
    made to fail) and give the same answers as the fitted object did."""
    from vlinterp.eval import steer
    from vlinterp.steering import MeanDiff

    out = tmp_path / "fits" / "md"
    assert main(["steer", "fit", "--method", "meandiff:alpha=0.5,layers=1", "--dataset", "shapes:steer-probe:32:0",
                 "--model", "tiny:llava", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "fitting meandiff on shapes:steer-probe:32:0" in err and "meandiff: alpha 0.5" in err
    assert sorted(p.name for p in out.iterdir()) == [".vlinterp-manifest.json", "steering.json", "steering.safetensors"]
    doc = json.loads((out / "steering.json").read_text())
    assert doc["method"] == "meandiff" and doc["config"]["alpha"] == 0.5 and doc["config"]["layers"] == [1]

    def refuse(*a, **k):
        raise AssertionError("refitted although --fit was given")

    monkeypatch.setattr(steer, "fit", refuse)
    monkeypatch.setattr(MeanDiff, "fit", refuse)
    js = tmp_path / "e.json"
    assert main(["steer", "eval", "--model", "tiny:llava", "--fit", str(out), "--n", "4", "--captions", "0", "--json", str(js)]) == 0
    assert set(json.loads(js.read_text())) == {"none", "meandiff"}
    img = _img(tmp_path)
    capsys.readouterr()
    assert main(["steer", "generate", str(img), "--prompt", "describe the image.", "--model", "tiny:llava", "--fit", str(out),
                 "--max-new-tokens", "4"]) == 0
    text = capsys.readouterr().out.strip()
    import vlinterp as vi
    from vlinterp import steering

    m = vi.load("tiny:llava")
    b = m.prepare(images=[Image.open(img).convert("RGB")], text=["describe the image."])
    assert text == steering.load(out).generate(m, b, max_new_tokens=4).texts[0]
    # fitting again into the same directory replaces vlinterp's own files
    monkeypatch.undo()
    assert main(["steer", "fit", "--method", "vcd:alpha=2", "--model", "tiny:llava", "--out", str(out)]) == 0
    assert json.loads((out / "steering.json").read_text())["method"] == "vcd"


def test_steer_eval_on_user_pope_and_caption_files(tmp_path, capsys):
    from vlinterp.core.errors import DataError
    from vlinterp.eval.pope import read_pope_jsonl

    imgs = [_img(tmp_path, f"img{i}.png", i).name for i in range(3)]
    pope = tmp_path / "pope.jsonl"
    pope.write_text("\n".join(json.dumps({"question_id": i, "image": im, "text": "Is there a dog in the image?",
                                          "label": "yes" if i % 2 else "no"}) for i, im in enumerate(imgs)) + "\n")
    caps = tmp_path / "caps.jsonl"
    caps.write_text("\n".join(json.dumps({"image": im, "objects": ["dog"]}) for im in imgs) + "\n")
    vocab = tmp_path / "syn.json"
    vocab.write_text(json.dumps({"dog": ["puppy"], "person": ["man", "woman"]}))
    js = tmp_path / "u.json"
    assert main(["steer", "eval", "--model", "tiny:llava", "--methods", "none,vcd", "--pope-jsonl", str(pope),
                 "--captions-jsonl", str(caps), "--vocab", str(vocab), "--json", str(js)]) == 0
    table = json.loads(js.read_text())
    for row in table.values():
        assert set(row["pope"]) >= {"accuracy", "f1", "false_yes"} and len(row["captions"]) == 3 and "chair_s" in row["chair"]
    items = read_pope_jsonl(str(pope))
    assert [it.answer for it in items] == ["no", "yes", "no"] and items[0].meta["candidates"] == ("yes", "no")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"image": imgs[0], "text": "is there a cat?", "label": "maybe"}) + "\n")
    with pytest.raises(DataError, match="label"):
        read_pope_jsonl(str(bad))


@pytest.mark.slow
def test_steer_generate_defaults_to_grounding_and_says_its_strengths(tmp_path, capsys, monkeypatch):
    from vlinterp.eval import steer

    fit = steer.fit
    # the CLI's own fit, on fewer probe scenes (the full default takes minutes)
    monkeypatch.setattr(steer, "fit", lambda name, m, data, progress=False, **o: fit(
        name, m, data, progress=progress, n=64, n_calib=32, n_captions=8, alphas=(1.0,), betas=(1.0,), **o))
    img = _img(tmp_path)
    assert main(["steer", "generate", str(img), "--prompt", "describe the image.", "--model", "tiny:llava", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() and "no --fit given: fitting ground first" in out.err
    assert "ground: alpha " in out.err and ", beta " in out.err and ", gate " in out.err
    assert "fitting ground: probe states" in out.err  # progress while fitting, not a silent wait


def _code(argv) -> int:
    """The exit status of ``vlinterp argv`` (argparse errors exit; others return)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def test_steer_fit_reads_any_dataset_spec(tmp_path, capsys):
    """``steer fit --dataset`` takes the same specs as every other command: the yes/no questions of an
    exported POPE split (every other yes and every other no question probe, the rest calibration) fit exactly what the same items fit in
    Python; a spec without yes/no questions and ground on questions are one-line errors."""
    import torch

    import vlinterp as vi
    from vlinterp.eval import steer
    from vlinterp.eval.datasets import open_dataset
    from vlinterp.eval.steer import FitData
    from vlinterp.steering import load

    ex = tmp_path / "ex"
    assert main(["data", "export", "shapes", "--format", "pope", "--n", "48", "--seed", "3", "--out", str(ex)]) == 0
    pope = sorted(ex.rglob("*adversarial*.json*"))[0]
    assert _code(["steer", "fit", "--method", "meandiff", "--dataset", f"pope:{pope}", "--model", "tiny:llava",
                  "--out", str(tmp_path / "f0")]) == 2  # the images are elsewhere: named before any model loads
    err = capsys.readouterr().err
    assert "image file missing" in err and "fitting" not in err and not (tmp_path / "f0").exists()
    spec = f"pope:{pope}:{ex / 'images'}"
    out = tmp_path / "fit"
    assert main(["steer", "fit", "--method", "probe:alpha=0.5", "--dataset", spec, "--model", "tiny:llava",
                 "--out", str(out)]) == 0
    assert spec in capsys.readouterr().err
    items = [it for it in open_dataset(spec).items("pope-adversarial") if it.answer in ("yes", "no")]
    ref = steer.fit("probe", vi.load("tiny:llava"), FitData("spec", path=spec), alpha=0.5)
    got = load(out)
    assert got.meta["data"]["items"] == len(items) // 2 == ref.meta["data"]["items"] and len(items) >= 40
    assert set(got.heads) == set(ref.heads)
    for name, parts in ref.heads.items():  # the probe head's weights, bias and readouts, as fitted in Python
        assert all(torch.equal(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(got.heads[name], parts) if a is not None)
    folder = tmp_path / "imgs" / "cat"
    folder.mkdir(parents=True)
    _img(folder, "a.png")
    assert _code(["steer", "fit", "--method", "meandiff", "--dataset", f"folder:{tmp_path / 'imgs'}", "--model", "tiny:llava",
                  "--out", str(tmp_path / "f2")]) == 2
    assert "yes/no questions" in capsys.readouterr().err
    assert _code(["steer", "fit", "--method", "ground", "--dataset", spec, "--model", "tiny:llava", "--out", str(tmp_path / "f3")]) == 2
    assert "needs images with object masks" in capsys.readouterr().err
    assert not (tmp_path / "f2").exists() and not (tmp_path / "f3").exists()


def test_generate_with_fit_never_fits(tmp_path, capsys, monkeypatch):
    """``steer generate --fit DIR`` loads the fit and generates: every steering class's ``fit`` and
    the evaluation layer's ``fit`` are made to raise, and the model runs exactly as many forwards as
    plain generation of the same tokens (``--method`` instead, which fits, runs many more: the
    counter sees fitting)."""
    import functools

    import vlinterp
    from vlinterp.eval import steer
    from vlinterp.steering import STEERING

    out = tmp_path / "md"
    assert main(["steer", "fit", "--method", "meandiff:alpha=0.5,layers=1", "--dataset", "shapes:steer-probe:32:0",
                 "--model", "tiny:llava", "--out", str(out)]) == 0
    load, counts = vlinterp.load, []

    def counting_load(*a, **k):  # the CLI's model, its forwards counted
        m = load(*a, **k)
        forward = m.model.forward
        counts.append(0)

        @functools.wraps(forward)  # generate() reads forward's signature
        def counted(*fa, **fk):
            counts[-1] += 1
            return forward(*fa, **fk)

        monkeypatch.setattr(m.model, "forward", counted)
        return m

    monkeypatch.setattr(vlinterp, "load", counting_load)
    img = _img(tmp_path)
    gen = ["steer", "generate", str(img), "--prompt", "describe the image.", "--model", "tiny:llava", "--max-new-tokens", "4"]
    assert main([*gen, "--method", "meandiff:alpha=0.5,layers=1"]) == 0  # fits first: the counter sees it
    fitting = counts[-1]

    def refuse(*a, **k):
        raise AssertionError("steer generate --fit fitted")

    monkeypatch.setattr(steer, "fit", refuse)
    for name in STEERING.names():
        monkeypatch.setattr(STEERING.get(name), "fit", classmethod(refuse))
    capsys.readouterr()
    assert main([*gen, "--fit", str(out)]) == 0
    loaded, text = counts[-1], capsys.readouterr().out.strip()
    m = vlinterp.load("tiny:llava")
    b = m.prepare(images=[Image.open(img).convert("RGB")], text=["describe the image."])
    plain = m.generate(b, max_new_tokens=4)
    assert counts[-1] == loaded == 4  # plain generation of 4 tokens: 4 forwards; generate --fit: the same
    assert fitting >= loaded + 128 // 32  # --method fitted first: its 128 probe questions, 32 per forward, on top
    from vlinterp import steering

    counts.append(0)
    with steering.load(out).applied(m):
        assert m.generate(b, max_new_tokens=4).texts[0] == text
    assert counts[-1] == loaded  # steered generation of the same tokens: the same forwards
    assert plain.texts[0] is not None
