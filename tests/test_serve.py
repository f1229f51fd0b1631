"""`vlinterp serve` without a browser: the job runner (cancel between steps, cache, errors kept to
their job), the command's bad input (port taken, bad port, not an SAE directory) and the app on a
tiny LLaVA through Starlette's test client (uploads, size limit, questions, every job kind)."""
import json
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from cli_util import assert_bad_input
from vlinterp.core.errors import PromptError
from vlinterp.serve.jobs import Jobs


def wait(job, timeout=60.0):
    t0 = time.monotonic()
    while job.state not in ("done", "error", "cancelled"):
        assert time.monotonic() - t0 < timeout, f"job {job.id} still {job.state}"
        time.sleep(0.01)
    return job


def test_jobs_cancel_between_steps_and_queue():
    jobs = Jobs()
    gate, steps = threading.Event(), []

    def slow(job):
        for i in range(1000):
            job.step(i, 1000, "counting")
            steps.append(i)
            gate.wait(0.005)
        return "finished"

    a = jobs.submit("slow", ("slow", 1), slow)
    queued = jobs.submit("slow", ("slow", 2), slow)  # waits for the model lock
    while not steps:
        time.sleep(0.005)
    assert queued.state == "queued"
    jobs.cancel(queued.id)
    jobs.cancel(a.id)
    assert wait(a).state == "cancelled" and wait(queued).state == "cancelled"
    assert len(steps) < 1000 and ("slow", 1) not in jobs.cache
    n = len(steps)
    time.sleep(0.05)
    assert len(steps) == n  # nothing runs after the cancel


def test_jobs_cache_dedupe_and_errors():
    jobs = Jobs(cache_size=2)
    calls = []

    def work(job):
        calls.append(job.id)
        job.step(1, 2, "half")
        return {"v": len(calls)}

    j1 = wait(jobs.submit("w", ("w", 1), work))
    j2 = jobs.submit("w", ("w", 1), work)
    assert j1.result == {"v": 1} and j2.cached and j2.state == "done" and j2.result == {"v": 1} and len(calls) == 1
    for k in (2, 3):  # the cache keeps the 2 most recent keys
        wait(jobs.submit("w", ("w", k), work))
    assert ("w", 1) not in jobs.cache and len(calls) == 3

    def ours(job):
        raise PromptError("type a question about the image")

    def bug(job):
        raise ZeroDivisionError("boom")

    e1, e2 = wait(jobs.submit("e", ("e", 1), ours)), wait(jobs.submit("e", ("e", 2), bug))
    assert e1.state == "error" and e1.error == "type a question about the image"
    assert e2.state == "error" and e2.error.startswith("internal error: ZeroDivisionError")
    assert wait(jobs.submit("w", ("w", 9), work)).state == "done"  # the runner survives both
    assert e1.to_json()["error"] and "result" not in e1.to_json()


@pytest.fixture
def port_in_use():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s.getsockname()[1]
    s.close()


def test_serve_bad_input(tmp_path, capsys, monkeypatch, port_in_use):
    (tmp_path / "notsae").mkdir()
    line = assert_bad_input(["serve", "--port", str(port_in_use)], tmp_path, capsys, monkeypatch, match="already in use")
    assert str(port_in_use) in line and "--port" in line
    assert_bad_input(["serve", "--port", "70000"], tmp_path, capsys, monkeypatch, match="port")
    assert_bad_input(["serve", "--sae", "notsae"], tmp_path, capsys, monkeypatch, match="not an SAE directory")
    assert_bad_input(["serve", "--sae", "missing"], tmp_path, capsys, monkeypatch, match="does not exist")
    assert_bad_input(["serve", "--max-upload", "0"], tmp_path, capsys, monkeypatch, match="greater than 0")
    assert_bad_input(["serve", "--host", "no.such.host.invalid"], tmp_path, capsys, monkeypatch, match="--host")


# ----------------------------------------------------------------------------- the app
@pytest.fixture(scope="module")
def client():
    from starlette.testclient import TestClient

    import vlinterp as vi
    from vlinterp.serve import Workbench, create_app, shapes_examples

    bench = Workbench(vi.load("tiny:llava"), "tiny:llava", examples=shapes_examples(2), max_new_tokens=3)
    with TestClient(create_app(bench, max_upload=200_000)) as c:
        yield c


@pytest.fixture(scope="module")
def scene_bytes():
    import io

    from vlinterp.data import make_scene

    buf = io.BytesIO()
    make_scene("test-serve", 0, 1).pil().save(buf, format="PNG")
    return buf.getvalue()


def run_job(client, spec, timeout=120.0):
    r = client.post("/api/jobs", content=json.dumps(spec))
    assert r.status_code == 202, r.text
    j = r.json()
    t0 = time.monotonic()
    while j["state"] not in ("done", "error", "cancelled"):
        assert time.monotonic() - t0 < timeout
        time.sleep(0.02)
        j = client.get(f"/api/jobs/{j['id']}").json()
    return j


def test_app_uploads_and_refusals(client, scene_bytes):
    info = client.get("/api/info").json()
    assert info["layers"] == 2 and "relevancy" in info["methods"] and info["saes"] == [] and len(info["examples"]) == 2
    assert client.get(f"/api/images/{info['examples'][1]['id']}").content.startswith(b"\x89PNG")
    page = client.get("/").text
    assert 'id="ask"' in page and "http://" not in page and "https://" not in page  # no CDN
    assert "fetch(" in client.get("/static/explorer.js").text and client.get("/static/nope.js").status_code == 404
    up = client.post("/api/images", content=scene_bytes, headers={"Content-Type": "image/png"})
    assert up.status_code == 200 and up.json()["width"] == 128
    png = client.get(f"/api/images/{up.json()['id']}")
    assert png.headers["content-type"] == "image/png" and np.asarray(Image.open(__import__("io").BytesIO(png.content))).shape == (128, 128, 3)
    bad = client.post("/api/images", content=b"just some text", headers={"Content-Type": "text/plain"})
    assert bad.status_code == 400 and "not a readable image" in bad.json()["error"]
    big = client.post("/api/images", content=b"\0" * 300_000)
    assert big.status_code == 413 and "limit" in big.json()["error"]
    iid = up.json()["id"]
    for spec, msg in [({"kind": "ask", "image": iid, "question": "   "}, "type a question"),
                      ({"kind": "ask", "image": "0123", "question": "hi"}, "unknown image"),
                      ({"kind": "ask", "image": "", "question": "hi"}, "upload an image"),
                      ({"kind": "nope", "image": iid, "question": "hi"}, "unknown job kind"),
                      ({"kind": "map", "image": iid, "question": "hi", "method": "nosuch"}, "unknown saliency method"),
                      ({"kind": "trace", "image": iid, "question": "hi", "samples": 99}, "samples"),
                      ({"kind": "sae", "image": iid, "question": "hi", "where": {"pos": 3}}, "no SAE is loaded")]:
        r = client.post("/api/jobs", content=json.dumps(spec))
        assert r.status_code == 400 and msg in r.json()["error"], (spec, r.text)
    assert client.post("/api/jobs", content=b"{not json").status_code == 400
    assert client.get("/api/jobs/j999999").status_code == 404
    assert client.get("/api/info").status_code == 200  # still serving


def test_app_jobs(client, scene_bytes):
    iid = client.post("/api/images", content=scene_bytes).json()["id"]
    q = "what color is the circle?"
    ask = run_job(client, {"kind": "ask", "image": iid, "question": q})
    assert ask["state"] == "done", ask
    r = ask["result"]
    n = len(r["tokens"])
    v = r["view"]
    assert 1 <= n <= 3 and len(v["overlays"]) == n and v["name"] == "relevancy"
    assert (v["all"] is not None) == (n > 1) and len(v["layers"]) == 2 and v["text"]["tokens"][:2] == ["what", "color"]
    assert [s["kind"] for s in r["sequence"]].count("answer") == n
    again = run_job(client, {"kind": "ask", "image": iid, "question": q})
    assert again["cached"] and again["result"]["answer"] == r["answer"]
    att = run_job(client, {"kind": "map", "image": iid, "question": q, "method": "attention"})["result"]["view"]
    assert att["name"] == "attention" and att["overlays"][0] != v["overlays"][0]
    assert run_job(client, {"kind": "attention", "image": iid, "question": q})["state"] == "done"
    views = {}
    for layer, head in (("mean", "mean"), ("0", "1"), ("1", "0")):
        a = client.get("/api/attention", params={"image": iid, "question": q, "layer": layer, "head": head, "token": "0"})
        assert a.status_code == 200, a.text
        views[(layer, head)] = a.json()
        m = a.json()["mass"]
        assert abs(m["image"] + m["prompt"] + m["other"] - 1) < 1e-3 and len(a.json()["weights"]) == len(v["text"]["tokens"])
    assert len({x["overlay"] for x in views.values()}) == 3
    assert client.get("/api/attention", params={"image": iid, "question": q, "layer": "7"}).status_code == 400
    tr = run_job(client, {"kind": "trace", "image": iid, "question": q, "samples": 1})
    assert tr["state"] == "done", tr
    rr = np.asarray(tr["result"]["rr"])
    assert rr.shape == (3, 2, 7) and tr["result"]["components"] == ["attn", "mlp", "resid"]
    assert np.allclose(rr[2, -1, -1], 1.0, atol=1e-4)  # restoring the last layer's state at the last token recovers all
