"""The steering interface (vlinterp.steering.base): one registry, one shape, one saved format; fits
saved and loaded give bit-identical generations; strength-selection rules; the layering of the code."""
import ast
import dataclasses
import inspect
import json
import pathlib

import pytest
import torch

import vlinterp
from vlinterp.core.errors import LoadError, OutputError, UnknownNameError
from vlinterp.steering import STEERING, SteeringMethod, load

ROOT = pathlib.Path(vlinterp.__file__).parent


def test_registry_holds_every_method_with_one_shape():
    assert STEERING.names() == ["iri", "vcd", "meandiff", "save", "probe", "ground"]
    for name in STEERING.names():
        cls = STEERING.get(name)
        assert issubclass(cls, SteeringMethod) and cls.name == name
        assert dataclasses.is_dataclass(cls.Config)
        assert list(inspect.signature(cls.fit).parameters)[:5] == ["adapter", "items", "config", "calib", "progress"]
        for k in cls.strengths:
            assert k in {f.name for f in dataclasses.fields(cls.Config)}
    with pytest.raises(UnknownNameError, match="did you mean ground"):
        STEERING.check("grund")


@pytest.fixture(scope="module")
def tiny():
    return vlinterp.load("tiny:llava")


@pytest.fixture(scope="module")
def tiny_fits(tiny):
    """Every method fitted on a random tiny LLaVA with small probe sets (strengths given)."""
    from vlinterp.eval import steer

    m = tiny
    kw = {"iri": dict(n=2, lam=2.0), "vcd": dict(alpha=1.0), "meandiff": dict(n=32, alpha=0.5),
          "save": dict(n=32, alpha=0.5, sae_steps=30, sae_features=32, sae_k=4),
          "probe": dict(n=32, n_captions=0, alpha=0.5), "ground": dict(n=16, alpha=3.0, beta=1.0, gate=1.0)}
    fits = {}
    for name, opts in kw.items():
        sae = None
        if name == "save":  # a small SAE on the probe items' states, not the 400-scene default
            from vlinterp.eval import shapes
            from vlinterp.steering import SAVE

            sae = SAVE.default_sae(m, "blocks.1.resid", shapes.pope("steer-probe", 32, 0, "adversarial"), steps=30,
                                   d_sae=32, k=4)
        fits[name] = steer.fit(name, m, sae=sae, **opts)
    return m, fits


@pytest.mark.slow
def test_every_fit_saves_and_loads_to_bit_identical_generations(tiny_fits, tmp_path):
    from vlinterp.data.shapes import make_split
    from vlinterp.core.hooks import count_hooks

    m, fits = tiny_fits
    scenes = make_split("chair", 3, 23)
    b = m.prepare(images=[s.pil() for s in scenes], text=["describe the image.", "is there a red circle?", "what color is the cross?"])
    hooks = count_hooks(m.model)
    plain = m.generate(b, max_new_tokens=6)
    for name, fitted in fits.items():
        path = fitted.save(tmp_path / name)
        doc = json.loads((tmp_path / name / "steering.json").read_text())
        assert doc["method"] == name and doc["config"] == json.loads(json.dumps(dataclasses.asdict(fitted.config)))
        back = load(path)
        assert type(back) is type(fitted) and back.config == fitted.config and back.meta == fitted.meta
        assert set(back.tensors()) == set(fitted.tensors())
        assert all(torch.equal(back.tensors()[k], v) for k, v in fitted.tensors().items())
        g0, g1 = fitted.generate(m, b, max_new_tokens=6), back.generate(m, b, max_new_tokens=6)
        assert torch.equal(g0.sequences, g1.sequences), name
        with back.applied(m):
            assert torch.equal(m.generate(b, max_new_tokens=6).sequences, g1.sequences), name
        assert count_hooks(m.model) == hooks
    assert torch.equal(m.generate(b, max_new_tokens=6).sequences, plain.sequences)  # nothing left behind


def test_loading_errors_and_outputs_kept(tmp_path):
    from vlinterp.steering import IRI, VCD, MeanDiff, ProbeSteer

    fits = {"vcd": VCD(), "meandiff": MeanDiff({1: torch.ones(16)}, alpha=0.1),
            "probe": ProbeSteer({"question": (torch.ones(1, 16), torch.zeros(1), torch.ones(1, 16))}, layer=1, alpha=0.1)}
    with pytest.raises(LoadError, match="does not exist"):
        load(tmp_path / "nope")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "mine.txt").write_text("mine")
    with pytest.raises(LoadError, match="holds no steering fit"):
        load(tmp_path / "user")
    with pytest.raises(OutputError, match="not empty"):
        fits["vcd"].save(tmp_path / "user")
    assert sorted(p.name for p in (tmp_path / "user").iterdir()) == ["mine.txt"]
    fits["vcd"].save(tmp_path / "v")
    with pytest.raises(LoadError, match="holds a 'vcd' fit"):
        IRI.load(tmp_path / "v")
    doc = json.loads((tmp_path / "v" / "steering.json").read_text())
    doc["method"] = "vcdx"
    (tmp_path / "v" / "steering.json").write_text(json.dumps(doc))
    with pytest.raises(UnknownNameError, match="did you mean vcd"):
        load(tmp_path / "v")
    fits["meandiff"].save(tmp_path / "v2")
    fits["probe"].save(tmp_path / "v2")  # an earlier vlinterp output is replaced, file by file
    assert type(load(tmp_path / "v2")).__name__ == "ProbeSteer"


def test_fit_shows_progress(tiny, capsys):
    from vlinterp.eval import steer

    capsys.readouterr()
    steer.fit("meandiff", tiny, n=32, progress=True, alpha=0.1)
    assert "fitting meandiff: probe states" in capsys.readouterr().err


def test_least_false_yes_rule():
    """The lowest false-yes rate among grid values whose other accuracies each stay within the
    tolerance; the strongest one wins only if it keeps them; nothing better than off gives 0."""
    from vlinterp.steering.select import least_false_yes, summary

    base = {"false_yes": 0.20, "random": 0.98, "colour": 0.90, "count": 0.90}
    grid = {"0.1": {"false_yes": 0.15, "random": 0.98, "colour": 0.90, "count": 0.895},
            "0.2": {"false_yes": 0.10, "random": 0.975, "colour": 0.90, "count": 0.90},   # the best that qualifies
            "0.3": {"false_yes": 0.02, "random": 0.96, "colour": 0.90, "count": 0.90}}    # costs 2 points of random
    assert least_false_yes(base, grid, 0.01) == 0.2
    assert least_false_yes(base, grid, 0.03) == 0.3
    assert least_false_yes(base, {"0.5": {**base, "false_yes": 0.25}}, 0.01) == 0.0
    # one yes/no group alone: its own accuracy is the constraint, so "no" to everything cannot win
    only = {"presence": {"false_yes": 0.3, "accuracy": 0.8}}
    assert summary(only) == {"false_yes": 0.3, "accuracy": 0.8}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    mod = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".")[: len(mod.split(".")) - node.level]
                out.add(".".join(base + ([node.module] if node.module else [])))
            else:
                out.add(node.module or "")
    return out


@pytest.mark.parametrize("package,forbidden", [
    ("steering", ("vlinterp.data", "vlinterp.eval", "vlinterp.commands", "vlinterp.viz")),
    ("metrics/chair.py", ("vlinterp.data", "vlinterp.eval", "vlinterp.commands")),
    ("metrics/pope.py", ("vlinterp.data", "vlinterp.eval", "vlinterp.commands")),
    ("metrics/answers.py", ("vlinterp.data", "vlinterp.eval", "vlinterp.commands")),
    ("eval", ("vlinterp.commands",)),
])
def test_layers_point_one_way(package, forbidden):
    """Methods sit below eval and take no dataset; eval never imports the CLI."""
    files = [ROOT / package] if package.endswith(".py") else sorted((ROOT / package).rglob("*.py"))
    for f in files:
        bad = [i for i in _imports(f) if any(i == x or i.startswith(x + ".") for x in forbidden)]
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


class _Shift(SteeringMethod):
    """The README's example: a new method is this class plus one registration line."""

    name = "shift"
    strengths = ("alpha",)
    needs = ("presence",)

    @dataclasses.dataclass
    class Config:
        layer: int = 1
        alpha: float = 0.1

    def __init__(self, direction, config=None, meta=None, **opts):
        super().__init__(config, meta, **opts)
        self.direction = direction

    @classmethod
    def fit(cls, adapter, items, config=None, calib=None, progress=False):
        cfg = cls.make_config(config)
        cls.check_kind(adapter)
        site = f"blocks.{cfg.layer}.resid"
        b = adapter.prepare(images=[it.image for it in items], text=[it.prompt for it in items])
        h = adapter.run(b, capture=[site]).cache[site][:, -1].float()  # [N, D] (left padding: last = T - 1)
        yes = torch.tensor([it.answer == "yes" for it in items])
        return cls(h[yes].mean(0) - h[~yes].mean(0), cfg)

    def edits(self, adapter):
        from vlinterp.steering.common import add_direction

        self.check(adapter)
        return {f"blocks.{self.config.layer}.resid": add_direction(self.direction, self.config.alpha)}

    def tensors(self):
        return {"direction": self.direction}

    @classmethod
    def from_saved(cls, tensors, state, config, meta):
        return cls(tensors["direction"], config, meta)


@pytest.mark.slow
def test_a_new_method_is_one_class_and_one_registration(tiny, monkeypatch, tmp_path, capsys):
    from vlinterp.cli import main

    monkeypatch.setattr(vlinterp, "load", lambda *a, **k: tiny)  # the CLI's model, loaded once
    monkeypatch.setattr(STEERING, "_targets", dict(STEERING._targets))
    monkeypatch.setattr(STEERING, "_loaded", dict(STEERING._loaded))
    STEERING.register("shift", _Shift)  # the registration line
    out = tmp_path / "fit"
    assert main(["steer", "fit", "--method", "shift:alpha=0.5", "--dataset", "shapes:steer-probe:16", "--model", "tiny:llava",
                 "--out", str(out)]) == 0
    back = load(out)
    assert isinstance(back, _Shift) and back.config == _Shift.Config(alpha=0.5)
    js = tmp_path / "t.json"
    assert main(["steer", "eval", "--model", "tiny:llava", "--methods", "none,shift:alpha=0.5", "--fit", str(out),
                 "--n", "4", "--captions", "0", "--json", str(js)]) == 0
    assert set(json.loads(js.read_text())) == {"none", "shift:alpha=0.5", "shift"}
