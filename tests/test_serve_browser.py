"""The explorer in a real browser: headless Chromium driven by selenium (Debian's chromium and
chromedriver) against `vlinterp serve` started by the test on a free port (``--port 0``), with a
tiny SAE trained here for the SAE tab.

Asks "what color is the circle?" about the example scene on shapes-llava and gets "yellow"; clicks
the answer token, switches method, layer and head, runs the trace tab and the SAE tab; a caption
question's token click changes the map; a non-image upload and an empty question show a message and
the server keeps serving. Then 20 concurrent requests (127.0.0.1 only), a cancelled job, and an
upload over the limit. Skipped when Chromium, chromedriver or selenium is absent, except in CI
(``CI`` set), where that fails the test. ``VLINTERP_ASSETS=1`` also writes the README screenshot
``assets/serve_explorer.png``.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from test_report_browser import find_browser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENE = os.path.join(ROOT, "assets", "example_scene.png")
pytestmark = pytest.mark.slow


def need(what: str, ok: bool, install: str):
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI for the explorer browser test ({install})")
    pytest.skip(f"no {what} on this machine ({install} to run the explorer browser test)")


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory):
    """A tiny top-k SAE on shapes-llava's blocks.2.resid, with its store (so dashboards work)."""
    import vlinterp as vi
    from vlinterp.sae.attach import save_sae
    from vlinterp.eval.sae_data import items_from_spec
    from vlinterp.sae.store import ActivationStore
    from vlinterp.sae.train import train_sae

    d = tmp_path_factory.mktemp("sae")
    spec = "shapes:sae-train:16:0:caption"
    m = vi.load("shapes-llava")
    st = ActivationStore.harvest(m, "blocks.2.resid", items_from_spec(spec), out_dir=str(d / "store"), tokens="content",
                                 dataset=spec, progress=False)
    sae = train_sae(st, "topk", d_sae=64, k=8, steps=60, batch_size=64, progress=False)
    save_sae(sae, str(d / "sae"), {"store": str(d / "store"), "dataset": spec})
    return str(d / "sae")


@pytest.fixture(scope="module")
def server(sae_dir, tmp_path_factory):
    """`vlinterp serve` on a free port; yields its base URL."""
    cwd = tmp_path_factory.mktemp("serve")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "vlinterp", "serve", "--model", "shapes-llava", "--port", "0",
                             "--sae", sae_dir, "--max-upload", "1"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url, seen, t0 = None, [], time.monotonic()
    while url is None and time.monotonic() - t0 < 240:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        m = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        url = m.group(1) if m else None
    assert url, "the server did not start:\n" + "".join(seen[-20:])
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode is not None


def request(method, url, data=None, ctype="application/json", timeout=60):
    r = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": ctype} if data is not None else {})
    try:
        with urllib.request.urlopen(r, timeout=timeout) as f:
            body = f.read()
            return f.status, (json.loads(body) if f.headers.get_content_type() == "application/json" else body)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def driver():
    browser = find_browser()
    chromedriver = shutil.which("chromedriver")
    need("chromedriver", chromedriver is not None, "apt-get install -y chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        need("selenium", False, "pip install selenium")
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium manager: never look anything up
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1360,1000",
              "--hide-scrollbars"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(chromedriver), options=opts)
    yield d
    d.quit()


def until(drv, fn, what, timeout=120):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(drv, timeout, poll_frequency=0.1).until(lambda d: fn(d))
    except Exception as e:  # noqa: BLE001 - say what we waited for, with the page's message
        msg = drv.find_element("id", "message").text
        raise AssertionError(f"timed out waiting for {what}; page message: {msg!r}") from e


def test_explorer_in_browser(server, driver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = driver
    q = lambda i: d.find_element(By.ID, i)  # noqa: E731
    d.get(server + "/")
    until(d, lambda d: d.execute_script("return document.body.dataset.ready") == "true", "the page to load")
    assert "shapes-llava" in q("model").text

    # bad input first: a text file as the image
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    q("file").send_keys(str(notes))
    until(d, lambda d: q("message").is_displayed() and "not a readable image" in q("message").text, "the non-image message")

    # the example scene, the question, the answer
    q("file").send_keys(SCENE)
    until(d, lambda d: q("ask").is_enabled() and q("picked").get_attribute("src"), "the upload")
    q("question").send_keys("what color is the circle?")
    q("ask").click()
    until(d, lambda d: q("answer").text == "yellow", 'the answer "yellow"')
    assert q("message").is_displayed() is False
    s0 = q("overlay").get_attribute("src")
    assert s0.startswith("data:image/png;base64,") and q("caption").text == "relevancy: yellow"
    chips = d.find_elements(By.CSS_SELECTOR, "#prompt-tokens .ptok")
    assert [c.text.split("\n")[0] for c in chips][:5] == ["what", "color", "is", "the", "circle"]
    assert len(d.find_elements(By.CSS_SELECTOR, "#layers figure.layer")) == 4

    # click the answer token, then another method: the map changes
    q("tok-0").click()
    assert q("tok-0").get_attribute("aria-pressed") == "true"
    Select(q("method")).select_by_value("attention")
    until(d, lambda d: q("overlay").get_attribute("src") != s0 and q("caption").text == "attention: yellow", "the attention map")
    q("tok-0").click()
    assert q("overlay").get_attribute("src") != s0

    # the attention browser: layer and head change the map
    q("tab-attn").click()
    until(d, lambda d: (q("attn-overlay").get_attribute("src") or "").startswith("data:image/png"), "the attention browser")
    a0 = q("attn-overlay").get_attribute("src")
    Select(q("layer")).select_by_value("1")
    until(d, lambda d: d.execute_script("return document.body.dataset.attn") == "1/mean/0", "layer 1")
    a1 = q("attn-overlay").get_attribute("src")
    Select(q("head")).select_by_value("2")
    until(d, lambda d: d.execute_script("return document.body.dataset.attn") == "1/2/0", "head 2")
    a2 = q("attn-overlay").get_attribute("src")
    assert len({a0, a1, a2}) == 3
    assert len(d.find_elements(By.CSS_SELECTOR, "#attn-tokens .ptok")) == 8 and "image patches" in q("attn-mass").text

    # the trace tab: a heat map of 3 components x 4 layers x 7 position groups
    q("tab-trace").click()
    q("trace-run").click()
    until(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#trace-grid td.rr-cell")) == 84, "the trace heat map", timeout=240)
    colours = {c.value_of_css_property("background-color") for c in d.find_elements(By.CSS_SELECTOR, "#trace-grid td.rr-cell")}
    assert len(colours) > 10  # a heat map, not a blank table
    assert "P(\"yellow\")" in q("trace-out").text
    # a longer trace, cancelled from the progress panel
    Select(q("trace-samples")).select_by_value("5")
    q("trace-words").send_keys("circle")
    q("trace-run").click()
    until(d, lambda d: q("busy").is_displayed(), "the progress panel")
    q("cancel").click()
    until(d, lambda d: q("message").is_displayed() and q("message").text == "cancelled", "the cancel")
    assert not q("busy").is_displayed() and len(d.find_elements(By.CSS_SELECTOR, "#trace-grid td.rr-cell")) == 84

    # the SAE tab: a click on the circle lists features with maps and dashboards
    q("tab-sae").click()
    img = q("sae-image")
    w, h = img.size["width"], img.size["height"]
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(d).move_to_element_with_offset(img, int(w * 0.05), int(h * 0.25)).click().perform()  # from the centre
    until(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sae-out tr.feature-row")) >= 1, "SAE features")
    assert "patch row" in q("sae-where").text
    link = d.find_element(By.CSS_SELECTOR, "#sae-out tr.feature-row a").get_attribute("href")
    code, page = request("GET", link)
    assert code == 200 and b"feature" in page and b"top image patches" in page
    d.find_element(By.CSS_SELECTOR, "#sae-tokens button.seq-answer").click()
    until(d, lambda d: 'token "yellow"' in q("sae-where").text, "SAE features at the answer token")

    # a caption: clicking one of its tokens changes the map from the answer's mean
    q("tab-maps").click()
    Select(q("method")).select_by_value("relevancy")
    q("question").clear()
    q("question").send_keys("describe the image.")
    q("ask").click()
    until(d, lambda d: q("answer").text.startswith("a yellow circle"), "the caption")
    assert q("tok-all").get_attribute("aria-pressed") == "true" and not q("message").is_displayed()  # the earlier note is gone
    m0 = q("overlay").get_attribute("src")
    q("tok-2").click()
    assert q("overlay").get_attribute("src") != m0 and q("caption").text == "relevancy: circle"
    if os.environ.get("VLINTERP_ASSETS"):  # the README's screenshot, small
        from PIL import Image

        shot = tmp_path / "explorer.png"
        d.set_window_size(1360, 1240)
        d.save_screenshot(str(shot))
        d.set_window_size(1360, 1000)
        im = Image.open(shot).convert("RGB")
        im = im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.LANCZOS).quantize(colors=128)
        im.save(os.path.join(ROOT, "assets", "serve_explorer.png"), optimize=True)

    # an empty question: a message, and the server still answers
    q("question").clear()
    q("ask").click()
    until(d, lambda d: q("message").is_displayed() and "type a question" in q("message").text, "the empty-question message")
    q("question").send_keys("what color is the circle?")
    q("ask").click()
    until(d, lambda d: q("answer").text == "yellow", "the answer again")


def test_concurrent_requests_cancel_and_size_limit(server):
    scene = open(SCENE, "rb").read()
    questions = ["what color is the circle?", "is there a green triangle?", "how many shapes are there?",
                 "what color is the square?", "is there a blue circle?"]
    calls = [("GET", "/api/info", None, None)] * 5 + [("GET", "/", None, None)] * 3 + \
            [("POST", "/api/images", scene, "image/png")] * 6 + [("POST", "/api/jobs", None, q) for q in questions] + \
            [("GET", "/static/explorer.js", None, None)]
    assert len(calls) == 20
    status, iid = request("POST", server + "/api/images", scene, "image/png")
    assert status == 200

    def one(call):
        method, path, data, q = call
        if path == "/api/jobs":
            data = json.dumps({"kind": "ask", "image": iid["id"], "question": q}).encode()
        return path, request(method, server + path, data, "image/png" if path == "/api/images" else "application/json")

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, calls))
    assert all(code in (200, 202) for _, (code, _) in results), [(p, c) for p, (c, _) in results]
    jobs = [body for p, (_, body) in results if p == "/api/jobs"]
    answers = {}
    for j in jobs:
        for _ in range(600):  # bounded: 2 minutes at most
            if j["state"] in ("done", "error", "cancelled"):
                break
            time.sleep(0.2)
            j = request("GET", f"{server}/api/jobs/{j['id']}")[1]
        assert j["state"] == "done", j
        answers[j["result"]["question"]] = j["result"]["answer"]
    assert answers["what color is the circle?"] == "yellow" and len(answers) == 5

    # a long job cancelled while it runs (or waits) stops at a step boundary
    code, j = request("POST", server + "/api/jobs", json.dumps({"kind": "trace", "image": iid["id"],
                                                                 "question": "is there a green triangle?", "samples": 5}).encode())
    assert code == 202
    request("POST", f"{server}/api/jobs/{j['id']}/cancel", b"")
    for _ in range(600):
        j = request("GET", f"{server}/api/jobs/{j['id']}")[1]
        if j["state"] in ("done", "error", "cancelled"):
            break
        time.sleep(0.1)
    assert j["state"] == "cancelled" and j["progress"][0] < j["progress"][1]

    # over the size limit (--max-upload 1 MiB): refused with a message
    code, body = request("POST", server + "/api/images", b"\0" * (1536 * 1024), "image/png")
    assert code == 413 and "limit is 1.0 MiB" in body["error"]
    assert request("GET", server + "/api/info")[0] == 200
