"""Running the CLI in-process for bad-input tests: exit 2, one line naming the problem, no traceback,
nothing written or deleted, and (unless the row says otherwise) no model loaded first."""
from __future__ import annotations

import os
import re


def tree(root) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file and folder under ``root``."""
    out = {}
    for d, dirs, files in os.walk(root):
        for x in dirs + files:
            p = os.path.join(d, x)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_size if x in files else -1, st.st_mtime_ns)
    return out


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``vlinterp ARGV`` in this process: ``(exit code, stdout, stderr)``. An exception escaping the
    CLI (a traceback for the user) fails the test."""
    from vlinterp.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001 - exactly what the user would see as a traceback
        raise AssertionError(f"vlinterp {' '.join(map(str, argv))} raised {type(e).__name__}: {e} (a traceback)") from e
    out, err = capsys.readouterr()
    return code, out, err


def assert_bad_input(argv, tmp_path, capsys, monkeypatch, match: str | None = None, before_load: bool = True) -> str:
    """Run ``vlinterp ARGV`` with ``tmp_path`` as the working directory and check the bad-input contract:
    exit 2, exactly one non-empty stderr line (matching ``match`` when given), no traceback, every
    file and folder under ``tmp_path`` as before; with ``before_load`` the model is never loaded.
    Returns the error line."""
    import vlinterp
    import vlinterp.adapters.registry as registry

    monkeypatch.chdir(tmp_path)
    if before_load:
        def refuse(*a, **k):
            raise AssertionError(f"a model was loaded before the bad input was refused: {a}")

        monkeypatch.setattr(vlinterp, "load", refuse)
        monkeypatch.setattr(registry, "load", refuse)
    before = tree(tmp_path)
    code, out, err = run_cli(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, f"exit {code}, stderr: {err!r}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    if match:
        assert re.search(match, lines[0], re.I), f"{lines[0]!r} does not match {match!r}"
    assert tree(tmp_path) == before, "the failed command wrote or deleted files"
    return lines[0]
