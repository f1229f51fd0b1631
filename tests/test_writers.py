"""The library's file writers (Result.save, viz.save_png, data.plot_samples) keep the output rule:
they replace what vlinterp wrote and refuse, before writing anything, a file it did not write."""
import numpy as np
import pytest

from vlinterp.core.errors import OutputError
from vlinterp.core.result import Result
from vlinterp.data import plot_samples
from vlinterp.viz import save_png


def _result(v: float) -> Result:
    return Result("trace", {"ie": np.full((2, 3), v)}, targets=["yes"])


def test_result_save_replaces_its_own_files_and_never_the_users(tmp_path):
    p = tmp_path / "r.json"
    _result(1.0).save(str(p))
    _result(2.0).save(str(p))  # its own files: replaced
    assert np.load(tmp_path / "r.npz")["ie"][0, 0] == 2.0
    (tmp_path / "s.npz").write_bytes(b"mine")  # the user's file beside the JSON it would write
    with pytest.raises(OutputError, match="s.npz"):
        _result(3.0).save(str(tmp_path / "s.json"))
    assert (tmp_path / "s.npz").read_bytes() == b"mine" and not (tmp_path / "s.json").exists()


def test_png_writers_refuse_the_users_files(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    save_png(tmp_path / "a.png", img)
    save_png(tmp_path / "a.png", img + 1)
    for name, write in (("b.png", lambda p: save_png(p, img)), ("c.png", lambda p: plot_samples(p, n=1))):
        (tmp_path / name).write_bytes(b"mine")
        with pytest.raises(OutputError):
            write(tmp_path / name)
        assert (tmp_path / name).read_bytes() == b"mine"
    plot_samples(tmp_path / "d.png", n=1)
    plot_samples(tmp_path / "d.png", n=2)
    assert (tmp_path / "d.png").stat().st_size > 0


@pytest.mark.parametrize("family,variant", [("llava", "llava"), ("clip", "clip"), ("vit", "vit")])
def test_tiny_model_savers_publish_a_directory_and_keep_the_users(tmp_path, family, variant):
    """A tiny model saved twice into the same folder (its own files replaced) loads back; a folder
    holding the user's files is refused before anything is written."""
    import importlib

    import vlinterp

    save = importlib.import_module(f"vlinterp.adapters.{family}").save_tiny
    out = tmp_path / "m"
    save(variant, str(out))
    save(variant, str(out))
    assert vlinterp.load(str(out)).family
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(OutputError):
        save(variant, str(mine))
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
