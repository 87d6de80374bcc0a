"""Headless Chromium driven over the DevTools protocol, for the dashboard test and
scripts/screenshot.

Why websocket-client and raw CDP rather than Playwright: the test needs five commands
(navigate, evaluate, wait, screenshot, close) against Debian's own `chromium`; Playwright's
Python package brings a Node driver and wants its own browser builds (which this machine
cannot download), while websocket-client is a small, well-kept pure-Python package.
"""
from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import websocket

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Browser:
    def __init__(self, ws_url: str) -> None:
        self._ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        with self._lock:
            call_id = next(self._ids)
            self._ws.settimeout(timeout)
            self._ws.send(json.dumps({"id": call_id, "method": method, "params": params or {}}))
            while True:
                message = json.loads(self._ws.recv())
                if message.get("id") == call_id:
                    if "error" in message:
                        raise RuntimeError(f"{method}: {message['error']}")
                    return message.get("result", {})

    def evaluate(self, expression: str, timeout: float = 30) -> Any:
        """The value of a JavaScript expression (promises are awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True, "timeout": int(timeout * 1000)},
                           timeout=timeout + 5)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, condition: str, timeout: float = 15) -> Any:
        """Wait, inside the page, until the JS expression `condition` is truthy (checked on
        every DOM change and every 50 ms); its value, or an error saying what was awaited."""
        script = f"""new Promise((resolve, reject) => {{
            const check = () => {{ try {{ return ({condition}); }} catch (e) {{ return false; }} }};
            let v = check(); if (v) {{ resolve(v); return; }}
            const done = (x) => {{ obs.disconnect(); clearInterval(t); clearTimeout(k); resolve(x); }};
            const obs = new MutationObserver(() => {{ const x = check(); if (x) done(x); }});
            obs.observe(document, {{subtree: true, childList: true, attributes: true, characterData: true}});
            const t = setInterval(() => {{ const x = check(); if (x) done(x); }}, 50);
            const k = setTimeout(() => {{ obs.disconnect(); clearInterval(t);
                reject(new Error('timed out waiting for: ' + {json.dumps(condition)})); }}, {int(timeout * 1000)});
        }})"""
        return self.evaluate(script, timeout=timeout + 5)

    def navigate(self, url: str) -> None:
        self.send("Page.enable")
        self.send("Page.navigate", {"url": url})

    def screenshot(self, path: Path, width: int = 1200, height: int = 900) -> Path:
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False})
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ws.close()


@contextlib.contextmanager
def chromium(profile_dir: Path | None = None) -> Iterator[Browser]:
    """A throwaway headless Chromium (its own profile, a free DevTools port), ended after."""
    if CHROMIUM is None:
        raise RuntimeError("chromium is not installed (scripts/setup test installs it)")
    with tempfile.TemporaryDirectory(prefix="sb-chromium-", ignore_cleanup_errors=True) as tmp:
        profile = profile_dir or Path(tmp)
        proc = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                                 "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                                 "--disable-extensions", "--disable-background-networking",
                                 "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                                 f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "HOME": str(profile)},
                                start_new_session=True)      # its helpers in one group, ended together
        browser = None
        try:
            port = None
            for line in proc.stderr:               # "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
                found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
                if found:
                    port = int(found.group(1))
                    break
            if port is None:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()   # keep draining
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
                pages = [t for t in json.loads(answer.read()) if t.get("type") == "page"]
            browser = Browser(pages[0]["webSocketDebuggerUrl"])
            yield browser
        finally:
            if browser is not None:
                browser.close()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)       # the browser and its helper processes
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            deadline = time.monotonic() + 5               # helpers exit after the main process
            while time.monotonic() < deadline:
                try:
                    os.killpg(proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)


def dashboard_flow(browser: Browser, base_url: str, key: str, scan, company: str = "962302",
                   screenshot: Path | None = None, traffic=None) -> dict[str, Any]:
    """Sign in, create a company, see its QR, have it scanned (`scan()`), and see it turn
    connected without a reload. Returns what was seen; optionally saves a screenshot."""
    browser.navigate(base_url + "/")
    browser.wait_for("document.getElementById('signin') && !document.getElementById('signin').hidden")
    browser.evaluate(f"document.getElementById('key').value = {json.dumps(key)}; "
                     "document.getElementById('signin-form').requestSubmit(); true")
    browser.wait_for("!document.getElementById('overview').hidden")
    browser.evaluate(f"document.getElementById('new-company').value = {json.dumps(company)}; "
                     "document.getElementById('create-form').requestSubmit(); true")
    qr_src = browser.wait_for("location.hash === '#/company/" + company + "' && "
                              "document.querySelector('#qr-box img') && "
                              "document.querySelector('#qr-box img').src.startsWith('data:image/png') && "
                              "document.querySelector('#qr-box img').src")
    browser.evaluate("window.__notReloaded = true")
    first_status = browser.evaluate("document.getElementById('c-status').textContent")
    # the pairing-code form (linking by phone number instead of scanning)
    browser.evaluate("document.getElementById('pair-phone').value = '+7 968 648-44-88'; "
                     "document.getElementById('pair-form').requestSubmit(); true")
    pairing = browser.wait_for("/^[A-Z0-9]{4}-[A-Z0-9]{4}$/.test(document.getElementById('pair-result').textContent) && "
                               "document.getElementById('pair-result').textContent")
    scan()
    browser.wait_for("document.getElementById('c-status').textContent === 'connected'", timeout=20)
    seen = {"qrSrc": qr_src, "statusBefore": first_status, "pairingCode": pairing,
            "notReloaded": browser.evaluate("window.__notReloaded === true"),
            "live": browser.evaluate("document.getElementById('live').textContent"),
            "cookieVisibleToScript": browser.evaluate("document.cookie.indexOf('sb_session') >= 0")}
    if traffic is not None:
        traffic()
    if screenshot is not None:
        browser.evaluate("location.hash = '#/'; true")
        browser.wait_for("!document.getElementById('overview').hidden && "
                         "document.querySelector('#companies tbody tr .badge.connected')")
        browser.wait_for("document.querySelector('#chart svg')")
        browser.screenshot(screenshot)
    return seen
