"""The HTML report in a real browser (headless Chromium): clicking a token button swaps the
overlay, the method selector switches views, and a screenshot is taken.

No selenium: a copy of the report gets a small script appended that clicks (``element.click()``
dispatches a real click event to the report's own handlers) and writes what it saw into the
DOM, which ``chromium --headless --dump-dom`` prints. Skipped only when Chromium is absent
outside CI; in CI (``CI`` set) a missing browser fails the test.
"""
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from vlinterp.viz.report import view_from_maps, write_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser():
    for b in BROWSERS:
        p = shutil.which(b)
        if p:
            return p
    if os.environ.get("CI"):
        pytest.fail("Chromium is required in CI for the report browser test (apt-get install -y chromium)")
    pytest.skip("no Chromium on this machine (install `chromium` to run the browser test)")


def run_browser(browser, tmp_path, *args, timeout=90):
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chrome-profile'}", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


CLICK_SCRIPT = """
<script>
(function(){
  var img = document.getElementById('overlay'), sel = document.getElementById('view');
  var r = {buttons: document.querySelectorAll('#tokens button').length};
  var s0 = img.src;
  document.getElementById('tok-1').click();
  var s1 = img.src;
  r.changed_on_click = s0 !== s1;
  r.pressed = document.getElementById('tok-1').getAttribute('aria-pressed');
  r.caption = document.getElementById('caption').textContent;
  sel.selectedIndex = 1; sel.dispatchEvent(new Event('change'));
  var s2 = img.src;
  r.changed_on_view = s2 !== s1;
  r.token_kept = document.body.dataset.token;
  r.caption_view = document.getElementById('caption').textContent;
  var all = document.getElementById('tok-all'); if (all) { all.click(); r.all_changed = img.src !== s2; }
  document.getElementById('tok-1').click();
  r.png = img.src.slice(0, 21);
  var pre = document.createElement('pre'); pre.id = 'test-result'; pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
})();
</script>
"""


@pytest.fixture
def report(tmp_path):
    a = np.full((96, 128, 3), 30, np.uint8)
    a[10:40, 10:40] = (220, 40, 40)
    a[50:90, 70:120] = (50, 90, 230)
    img = Image.fromarray(a)
    yy, xx = np.mgrid[:96, :128]
    maps = [np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 300.0) for cy, cx in ((25, 25), (70, 95), (48, 64))]
    views = [view_from_maps("method A", ["red", "blue", "."], maps, img),
             view_from_maps("method B / layer 1", ["red", "blue", "."], [maps[1], maps[2], maps[0]], img)]
    path = tmp_path / "report.html"
    write_report(path, img, views, title="test report", info={"answer": "red blue .", "prompt": "what colors?"})
    return path


@pytest.mark.slow
def test_report_click_switches_overlay(report, tmp_path):
    browser = find_browser()
    html = report.read_text()
    assert html.count("<script") == 2 and "http" not in re.sub(r'xmlns="[^"]*"', "", html)
    clicked = tmp_path / "clicked.html"
    clicked.write_text(html.replace("</body>", CLICK_SCRIPT + "</body>"))
    dom = run_browser(browser, tmp_path, "--dump-dom", clicked.as_uri())
    m = re.search(r'<pre id="test-result">(.*?)</pre>', dom, re.S)
    assert m, dom[-2000:]
    r = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert r["buttons"] == 4  # three tokens + "all"
    assert r["changed_on_click"] and r["pressed"] == "true" and r["caption"] == "method A: blue"
    assert r["changed_on_view"] and r["token_kept"] == "1" and r["caption_view"] == "method B / layer 1: blue"
    assert r["all_changed"] and r["png"] == "data:image/png;base64"

    shot = tmp_path / "report.png"
    run_browser(browser, tmp_path, f"--screenshot={shot}", "--window-size=900,700", clicked.as_uri())
    png = np.asarray(Image.open(shot).convert("RGB"))
    assert png.shape[:2] == (700, 900) and png.std() > 5  # rendered, not blank
    # the overlay colours (JET reds/blues) are on screen
    assert ((png[..., 0] > 200) & (png[..., 2] < 80)).sum() > 50
    if os.environ.get("VLINTERP_ARTIFACTS"):
        os.makedirs(os.environ["VLINTERP_ARTIFACTS"], exist_ok=True)
        shutil.copy(shot, os.path.join(os.environ["VLINTERP_ARTIFACTS"], "report_screenshot.png"))


def test_report_works_without_clicks(report):
    """The first view's mean map, its buttons and the colour scale are in the static HTML (no JS needed to see them)."""
    html = report.read_text()
    assert re.search(r'<img id="overlay"[^>]*src="data:image/png;base64,', html)
    assert html.count('class="tok"') == 3 and '<option value="1">method B / layer 1</option>' in html
    assert re.search(r'id="tok-all"[^>]*aria-pressed="true"', html)  # opens on the mean of the targets
    assert re.search(r'<img id="colorbar"[^>]*src="data:image/png;base64,', html) and re.search(r'id="cb-hi">[0-9.e-]+<', html)


VIEWS_SCRIPT = """<script>
(function(){
  function chips(){ return Array.prototype.map.call(document.querySelectorAll('#prompt-tokens .ptok'), function(c){ return c.dataset.score; }).join(','); }
  var img = document.getElementById('overlay');
  var r = {token0: document.body.dataset.token, caption0: document.getElementById('caption').textContent,
           chips: document.querySelectorAll('#prompt-tokens .ptok').length, words: Array.prototype.map.call(
             document.querySelectorAll('#prompt-tokens .ptok'), function(c){ return c.firstChild.textContent; }),
           layers: document.querySelectorAll('#layers figure.layer').length,
           prompt_shown: !document.getElementById('prompt-box').hidden, hi0: document.getElementById('cb-hi').textContent};
  var s0 = img.src, c0 = chips(), l0 = document.querySelector('#layers img').src;
  document.getElementById('tok-2').click();
  r.map_changed = img.src !== s0; r.chips_changed = chips() !== c0; r.layers_changed = document.querySelector('#layers img').src !== l0;
  r.caption1 = document.getElementById('caption').textContent; r.hi1 = document.getElementById('cb-hi').textContent;
  var sel = document.getElementById('view'); sel.selectedIndex = 1; sel.dispatchEvent(new Event('change'));
  r.view1_layers = document.querySelectorAll('#layers figure.layer').length; r.view1_prompt = !document.getElementById('prompt-box').hidden;
  var pre = document.createElement('pre'); pre.id = 'test-result'; pre.textContent = JSON.stringify(r); document.body.appendChild(pre);
})();
</script>"""


def test_explain_report_views_in_browser(tmp_path):
    """`vlinterp explain` on shapes-llava, a caption (several answer tokens): the report opens on the
    answer's mean map, shows the prompt words it used and one map per layer, and a token click
    changes the map, the words' shades, the layer strip and the colour scale's range."""
    from vlinterp.cli import main

    browser = find_browser()
    out = tmp_path / "exp"
    scene = os.path.join(os.path.dirname(__file__), "..", "assets", "example_scene.png")
    assert main(["explain", scene, "--prompt", "describe the image.", "--max-new-tokens", "4", "--compare", "rollout",
                 "--out", str(out)]) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["answer_tokens"] == ["a", "yellow", "circle", ","]
    page = tmp_path / "clicked.html"
    page.write_text((out / "report.html").read_text().replace("</body>", VIEWS_SCRIPT + "</body>"))
    dom = run_browser(browser, tmp_path, "--dump-dom", page.as_uri())
    m = re.search(r'<pre id="test-result">(.*?)</pre>', dom, re.S)
    assert m, dom[-2000:]
    r = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert r["token0"] == "all" and r["caption0"] == "relevancy: answer (mean of 4)"
    assert r["prompt_shown"] and r["words"][:4] == ["describe", "the", "image", "."] and r["layers"] == 4
    assert r["map_changed"] and r["chips_changed"] and r["layers_changed"] and r["caption1"] == "relevancy: circle"
    assert r["hi0"] != r["hi1"]
    assert r["view1_layers"] == 0 and r["view1_prompt"]  # rollout: prompt words, no per-layer maps
    if os.environ.get("VLINTERP_ASSETS"):  # the README's picture of the report's views
        shot = tmp_path / "views.png"
        run_browser(browser, tmp_path, f"--screenshot={shot}", "--window-size=1000,1180", (out / "report.html").as_uri())
        im = Image.open(shot).convert("RGB")
        rows = np.nonzero((np.asarray(im) < 245).any(axis=(1, 2)))[0]
        im = im.crop((0, 0, im.width, min(im.height, int(rows[-1]) + 16)))  # no empty page below
        im = im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.LANCZOS).quantize(colors=192)
        im.save(os.path.join(os.path.dirname(__file__), "..", "assets", "report_views.png"), optimize=True)


def test_explain_report_in_browser(tmp_path):
    """The report `vlinterp explain` writes (real method, tiny CLIP, two texts) works in the browser."""
    from vlinterp.cli import main

    browser = find_browser()
    a = np.full((128, 128, 3), 30, np.uint8)
    a[20:60, 20:60] = (220, 40, 40)
    Image.fromarray(a).save(tmp_path / "img.png")
    out = tmp_path / "exp"
    assert main(["explain", str(tmp_path / "img.png"), "--model", "tiny:clip", "--text", "a red square", "--text", "a blue circle",
                 "--compare", "rollout", "--out", str(out)]) == 0
    script = """<script>
    document.getElementById('tok-1').click();
    var sel = document.getElementById('view'); sel.selectedIndex = 1; sel.dispatchEvent(new Event('change'));
    var pre = document.createElement('pre'); pre.id = 'test-result';
    pre.textContent = document.getElementById('caption').textContent + '|' + document.getElementById('tok-1').getAttribute('aria-pressed')
      + '|' + document.getElementById('overlay').src.slice(0, 21);
    document.body.appendChild(pre);
    </script>"""
    page = tmp_path / "clicked.html"
    page.write_text((out / "report.html").read_text().replace("</body>", script + "</body>"))
    dom = run_browser(browser, tmp_path, "--dump-dom", page.as_uri())
    m = re.search(r'<pre id="test-result">(.*?)</pre>', dom, re.S)
    assert m and m.group(1) == "rollout: a blue circle|true|data:image/png;base64", dom[-1500:]
