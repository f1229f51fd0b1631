import json

import numpy as np
from PIL import Image

from vlinterp.cli import main


def test_steer_eval_and_generate_on_tiny(tmp_path, capsys):
    js = tmp_path / "t.json"
    assert main(["steer", "eval", "--model", "tiny:llava", "--methods", "none,vcd", "--n", "8", "--captions", "4", "--json", str(js)]) == 0
    table = json.loads(js.read_text())
    assert set(table) == {"none", "vcd"}
    for row in table.values():
        assert set(row) == {"random", "popular", "adversarial", "colour", "count", "chair", "fit_and_eval_seconds"}
        assert 0 <= row["chair"]["chair_s"] <= 1
        assert 0 <= row["adversarial"]["false_yes"] <= 1 and 0 <= row["colour"] <= 1
    assert "adv false-yes" in capsys.readouterr().out
    img = tmp_path / "x.png"
    Image.fromarray((np.random.RandomState(0).rand(40, 40, 3) * 255).astype("uint8")).save(img)
    assert main(["steer", "generate", str(img), "--prompt", "describe the image.", "--model", "tiny:llava", "--method", "vcd",
                 "--max-new-tokens", "3"]) == 0
    assert main(["steer", "eval", "--model", "tiny:llava", "--methods", "none,nosuch", "--n", "4"]) == 2


def test_steer_eval_on_user_pope_and_caption_files(tmp_path, capsys):
    import pytest

    from vlinterp.metrics.pope import load_pope_jsonl
    from vlinterp.core.errors import PromptError

    imgs = []
    for i in range(3):
        p = tmp_path / f"img{i}.png"
        Image.fromarray((np.random.RandomState(i).rand(40, 40, 3) * 255).astype("uint8")).save(p)
        imgs.append(p.name)
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
        assert 0 <= row["pope"]["accuracy"] <= 1 and len(row["captions"]) == 3 and "chair_s" in row["chair"]
    assert len(load_pope_jsonl(str(pope))) == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"image": imgs[0], "text": "is there a cat?", "label": "maybe"}) + "\n")
    with pytest.raises(PromptError, match="label"):
        load_pope_jsonl(str(bad))
    assert main(["steer", "eval", "--model", "tiny:llava", "--captions-jsonl", str(caps)]) == 2  # no --vocab


def test_steer_generate_defaults_to_grounding_and_says_its_strengths(tmp_path, capsys, monkeypatch):
    from vlinterp.steering import Grounding

    fit = Grounding.fit.__func__
    # the CLI's own fit, on fewer probe scenes (the full default takes minutes)
    monkeypatch.setattr(Grounding, "fit", classmethod(lambda cls, m: fit(cls, m, n=64, n_select=32, n_captions=8,
                                                                          alphas=(1.0,), betas=(1.0,))))
    img = tmp_path / "x.png"
    Image.fromarray((np.random.RandomState(0).rand(40, 40, 3) * 255).astype("uint8")).save(img)
    assert main(["steer", "generate", str(img), "--prompt", "describe the image.", "--model", "tiny:llava", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() and "ground: alpha " in out.err and ", beta " in out.err and ", gate " in out.err
