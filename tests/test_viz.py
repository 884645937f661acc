"""Pictures of the IR: DOT structure (typed edges, clusters, folded/unrolled repeats), SVG through graphviz, and the
self-contained HTML viewer driven in headless Chromium over the DevTools protocol (a pipe, no extra packages)."""
from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import specc
from specc.passes import PipelineOptions, run_pipeline
from specc.viz import render, to_dot

REPO = Path(__file__).resolve().parent.parent
HAND = REPO / "tests" / "golden" / "passes" / "hand_attention.nn"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` is not installed")
CHROMIUM = next((c for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

EDGE = re.compile(r'^\s*"(?P<src>[^"]+)" -> "(?P<dst>[^"]+)" \[id="(?P<id>e\d+)", label="(?P<label>[^"]*)"')


def _module(path: Path, **overrides):
    return specc.load(path, overrides=overrides).module


def test_every_edge_carries_a_shape() -> None:
    dot, details, _ = to_dot(_module(REPO / "specs" / "resnet18.nn"))
    edges = [EDGE.match(ln) for ln in dot.splitlines() if " -> " in ln]
    assert edges and all(edges)
    for e in edges:
        assert re.fullmatch(r"(\[\d+\] )?(f32|i64|bool)\[[^\]]*\]", e["label"]), e["label"]
    assert 'label="f32[B, 3, 224, 224]"' in dot


def test_blocks_are_clusters_and_repeat_is_folded_unless_flat() -> None:
    m = _module(REPO / "specs" / "gpt2.nn", layers=3)  # `repeat layers as h`
    dot, details, clusters = to_dot(m)
    assert 'subgraph "cluster_h"' in dot and 'label="h \u00d73"' in dot
    assert sum(1 for c in clusters if c.startswith("cluster_h")) == 4  # h > block > attn, mlp
    assert details["h.block.attn.sdpa"]["op"] == "sdpa"
    assert 'style="dashed"' in dot  # the carried value's back edge
    flat, _, fclusters = to_dot(m, flat=True)
    for i in range(3):
        assert f'subgraph "cluster_h.{i}"' in flat and f"h.{i}.block.attn.sdpa" in flat
    assert "\u00d73" not in flat and 'style="dashed"' not in flat


def test_fused_nodes_show_what_they_fused() -> None:
    m, _ = run_pipeline(_module(REPO / "specs" / "resnet18.nn"), PipelineOptions(level=2))  # fusion is -O2
    dot, details, _ = to_dot(m)
    assert "fused: conv2d + batchnorm + add + relu" in dot
    d = details["basic_block.conv2"]
    assert d["params"]["bn2.weight"] == ["64"] and d["buffers"]["bn2.running_var"] == ["64"]
    assert len(d["fused_from"]) == 4 and "batchnorm as bn2" in d["fused_from"][1]["code"]


@needs_dot
def test_svg_from_graphviz() -> None:
    svg = render(_module(REPO / "specs" / "lenet5.nn"), "svg")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert 'id="c1"' in svg and "f32[B, 6, 28, 28]" in svg


@needs_dot
def test_html_is_self_contained() -> None:
    page = render(_module(HAND), "html")
    assert page.startswith("<!doctype html>") and page.count("<svg") == 1
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", page), "the page must not load anything"
    assert "@import" not in page and "fetch(" not in page
    data = re.search(r'<script id="specc-data" type="application/json">(.*?)</script>', page, re.S)[1]
    assert "</" not in data
    info = json.loads(data)
    assert info["nodes"]["layers.hand_block.attn.q"]["params"] == {"weight": ["32", "32"], "bias": ["32"]}


@needs_dot
def test_cli_writes_svg_and_html(tmp_path) -> None:
    from specc.cli import main

    for fmt in ("svg", "html"):
        out = tmp_path / f"g.{fmt}"
        assert main(["inspect", str(REPO / "specs" / "lenet5.nn"), "--format", fmt, "-o", str(out), "-O1"]) == 0
        assert "<svg" in out.read_text()


# ---- the HTML page in a real browser ---------------------------------------------------------------------------

class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe reads commands from
    fd 3 and writes replies to fd 4, each a JSON text ended by NUL)."""

    def __init__(self, exe: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="specc-chromium-")
        cmd_r, self.cmd_w = os.pipe()
        self.res_r, res_w = os.pipe()

        def child() -> None:  # move both ends out of the way first: either may already be fd 3 or 4
            a, b = os.dup(cmd_r), os.dup(res_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
             "--disable-extensions", "--remote-debugging-pipe", f"--user-data-dir={self.profile}", "about:blank"],
            preexec_fn=child, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(res_w)
        self.buf = b""
        self.next_id = 0

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        while True:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(method)
            if select.select([self.res_r], [], [], left)[0]:
                chunk = os.read(self.res_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self.buf += chunk

    def open(self, url: str) -> "Page":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        page = Page(self, self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"])
        page.call("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 900, "deviceScaleFactor": 1,
                                                         "mobile": False})
        page.call("Page.navigate", {"url": url})
        for _ in range(200):
            if page.eval("document.readyState") == "complete":
                return page
            time.sleep(0.05)
        raise TimeoutError(f"{url} did not load")

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
            self.proc.wait(timeout=20)
        except Exception:  # noqa: BLE001 - make sure it is gone either way
            self.proc.kill()
            self.proc.wait()
        os.close(self.cmd_w)
        os.close(self.res_r)
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser, self.session = browser, session

    def call(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, self.session)

    def eval(self, expr: str):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def centre(self, selector: str) -> tuple[float, float]:
        x, y = self.eval(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                         ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        return x, y

    def click(self, selector: str) -> None:
        """Pan the element into view (as a person would drag it there), then click its middle."""
        self.eval(f"specc.reveal(document.querySelector({json.dumps(selector)}).closest('g[id]').id)")
        x, y = self.centre(selector)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})


@pytest.fixture(scope="module")
def browser():
    b = Chromium(CHROMIUM)
    yield b
    b.close()


@pytest.mark.browser
@needs_dot
@needs_chromium
def test_html_viewer_in_chromium(browser, tmp_path) -> None:
    m, _ = run_pipeline(_module(REPO / "specs" / "resnet18.nn"), PipelineOptions(level=2))  # fusion is -O2
    page_file = tmp_path / "resnet18.html"
    page_file.write_text(render(m, "html"), encoding="utf-8")
    page = browser.open(page_file.as_uri())

    # the graph rendered: every node drawn, with a size
    nodes = json.loads(page.eval("document.getElementById('specc-data').textContent"))["nodes"]
    assert page.eval("document.querySelectorAll('#canvas svg g.node').length") == \
        len([n for n in nodes if not n.startswith("cluster_")])
    assert page.eval("document.querySelectorAll('#canvas svg g.cluster').length") == 8
    assert page.eval("document.querySelector('#canvas svg').getBoundingClientRect().height") > 100

    # a click on a node shows its op, types, parameters and source line
    page.click('g.node[id="basic_block_2.conv2"]')
    text = page.eval("document.getElementById('details').innerText")
    for want in ("basic_block_2.conv2", "op fused", "f32[B, 128, 28, 28]", "conv2.weight", "[128, 128, 3, 3]",
                 "bn2.running_mean", "resnet.nn:10:12", "conv2d(width, 3, padding=1, bias=false) as conv2",
                 "return relu(x + y)"):
        assert want in text, f"{want!r} not in the details:\n{text}"
    assert page.eval("document.getElementById('basic_block_2.conv2').classList.contains('selected')")

    # a click on a block's title folds it: its nodes hide and the picture gets shorter; a second click unfolds
    height = page.eval("document.querySelector('#canvas svg').getBoundingClientRect().height")
    page.click('g.cluster[id="cluster_basic_block_2"] > text')
    assert page.eval("document.getElementById('basic_block_2.conv2').classList.contains('hidden')")
    assert page.eval("document.querySelector('#canvas svg').getBoundingClientRect().height") < height
    assert not page.eval("document.getElementById('basic_block_3.conv1').classList.contains('hidden')")
    page.click('g.cluster[id="cluster_basic_block_2"] > text')
    assert not page.eval("document.getElementById('basic_block_2.conv2').classList.contains('hidden')")
    assert page.eval("document.querySelector('#canvas svg').getBoundingClientRect().height") == pytest.approx(height)

    # wheel zooms around the pointer, drag pans
    before = page.eval("document.getElementById('canvas').style.transform")
    page.call("Input.dispatchMouseEvent", {"type": "mouseWheel", "x": 400, "y": 400, "deltaX": 0, "deltaY": -300})
    zoomed = page.eval("document.getElementById('canvas').style.transform")
    assert zoomed != before and "scale(" in zoomed
    for kind, x in (("mousePressed", 300), ("mouseMoved", 360), ("mouseReleased", 360)):
        page.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": 500, "button": "left", "buttons": 1,
                                               "clickCount": 1})
    assert page.eval("document.getElementById('canvas').style.transform") != zoomed


HOSTILE_LINE = "<!--<script>window.pwned = 1</script><script>window.pwned = 2</script>-->\u2028\u2029 & \"'"


@pytest.mark.browser
@needs_dot
@needs_chromium
def test_html_viewer_survives_hostile_source_lines(browser, tmp_path) -> None:
    """Source lines are shown in the viewer: a comment that opens an HTML comment and a script must neither stop
    the viewer's script (a blank page) nor run."""
    spec = ("model M() {\n  input x: f32[B, 4]\n"
            f"  output y = x -> relu  # {HOSTILE_LINE}\n}}\n")
    src = tmp_path / "hostile.nn"
    src.write_text(spec, encoding="utf-8")
    page_text = render(_module(src), "html")
    data = re.search(r'<script id="specc-data" type="application/json">(.*?)</script>', page_text, re.S)[1]
    assert not re.search(r"<!--|<script|</script|\u2028|\u2029", data, re.I)
    page_file = tmp_path / "hostile.html"
    page_file.write_text(page_text, encoding="utf-8")
    page = browser.open(page_file.as_uri())
    assert page.eval("typeof window.pwned") == "undefined"
    assert page.eval("typeof specc") == "object", "the viewer's script did not start"
    nodes = json.loads(page.eval("document.getElementById('specc-data').textContent"))["nodes"]
    shown = HOSTILE_LINE.split("\u2028")[0]  # the viewer shows the line as it was written (up to a line break)
    assert any(shown in v.get("code", "") for v in nodes.values())
    assert page.eval("document.querySelectorAll('#canvas svg g.node').length") == \
        len([n for n in nodes if not n.startswith("cluster_")])
