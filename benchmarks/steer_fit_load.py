"""``vlinterp steer fit`` against ``vlinterp steer generate --fit`` (the saved fit loaded, one answer
generated), side by side in one run: each command in its own Python process, as a user runs them
(start-up, imports and the model's load included in both), generate repeated and the median taken;
then the same two steps inside one process (``eval.steer.fit`` against ``steering.load``).

    python benchmarks/steer_fit_load.py [--model shapes-llava] [--method ground:alpha=3,beta=1,gate=1]
                                        [--dataset shapes:steer-probe:256:0] [--repeats 3] [--out DIR]

Issue 29 asks ``steer generate --fit`` to take under 10% of the time of fitting. Writes
``benchmarks/results/steer_fit_load_cpu.md`` (``_cuda`` on a GPU).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NOTE = ("Both commands pay Python start-up, imports and the model's load; generate --fit is almost only that (loading the "
        "fit itself takes milliseconds), so the whole-command ratio falls as the fit grows: the default ground fit "
        "(`--method ground --dataset shapes`: 2,048 probe scenes, strengths chosen on calibration questions and captions) "
        "takes minutes on a CPU. The script's default is a short fit (256 scenes, strengths given) to keep the run short; "
        "`--method ground --dataset shapes` measures the default fit.")


def _cli(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "vlinterp.cli", *args], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"vlinterp {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="shapes-llava")
    ap.add_argument("--method", default="ground:alpha=3.0,beta=1.0,gate=1.0")
    ap.add_argument("--dataset", default="shapes:steer-probe:256:0")
    ap.add_argument("--repeats", type=int, default=3, help="runs of generate --fit (median)")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results/steer_fit_load_{cpu,cuda}.md)")
    a = ap.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.dirname(HERE), env.get("PYTHONPATH")) if p)
    dev = ["--device", a.device] if a.device != "cpu" else []
    with tempfile.TemporaryDirectory() as tmp:
        from vlinterp.data.shapes import make_split

        img = os.path.join(tmp, "scene.png")
        make_split("bench", 1, 3)[0].pil().save(img)
        fit_dir = os.path.join(tmp, "fit")
        fit_s = _cli(["steer", "fit", "--method", a.method, "--dataset", a.dataset, "--model", a.model, "--out", fit_dir, *dev], env)
        gen = ["steer", "generate", img, "--prompt", "describe the image.", "--model", a.model, "--fit", fit_dir,
               "--max-new-tokens", str(a.tokens), *dev]
        gen_s = [_cli(gen, env) for _ in range(a.repeats)]
        # the same two steps in one process (no start-up, imports or model load)
        import vlinterp as vi
        from vlinterp import steering
        from vlinterp.core.registry import parse_spec
        from vlinterp.eval.steer import fit

        m = vi.load(a.model, device=a.device)
        name, opts = parse_spec(a.method)
        t0 = time.perf_counter()
        fit(name, m, a.dataset, **opts)
        fit_in = time.perf_counter() - t0
        load_in = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            steering.load(fit_dir)
            load_in.append(time.perf_counter() - t0)
    gen_med, load_med = statistics.median(gen_s), statistics.median(load_in)
    ratio, ratio_in = gen_med / fit_s, load_med / fit_in
    kind = "cuda" if a.device.startswith("cuda") else "cpu"
    out = a.out or os.path.join(HERE, "results", f"steer_fit_load_{kind}.md")
    lines = [
        "# steer fit vs steer generate --fit",
        "",
        f"`python benchmarks/steer_fit_load.py --model {a.model} --method {a.method} --dataset {a.dataset} "
        f"--repeats {a.repeats} --tokens {a.tokens}`, {platform.machine()} {os.cpu_count()} cores, device {a.device}, "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "| step | seconds |",
        "|---|---|",
        f"| `steer fit` (whole command: start-up, imports, model load, fit, save) | {fit_s:.1f} |",
        f"| `steer generate --fit` (whole command, {a.tokens} tokens; median of {a.repeats}: "
        f"{', '.join(f'{x:.1f}' for x in gen_s)}) | {gen_med:.1f} |",
        f"| fit alone, in one process (`eval.steer.fit`) | {fit_in:.2f} |",
        f"| load alone, in one process (`steering.load`; median of {a.repeats}) | {load_med:.3f} |",
        "",
        f"**generate --fit / fit: {ratio:.1%}** (whole commands; issue 29 asks < 10%); load / fit in one process: {ratio_in:.2%}.",
        "",
        NOTE,
        "",
    ]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
