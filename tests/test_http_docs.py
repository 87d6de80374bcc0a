"""The curl examples of the README work against `switchboard serve --transport simulated`:
every ```sh block runs, in order, in one shell, and no answer is an error."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.support.http import REPO, Served, clean_env

pytestmark = pytest.mark.timeout(120)
DOC = REPO / "README.md"


def test_the_documented_curl_examples_work(tmp_path):
    missing = [tool for tool in ("curl", "jq") if shutil.which(tool) is None]
    if missing:     # scripts/test installs them; only a hand-made environment may lack them
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"needs {' and '.join(missing)}")
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 10
    server = Served(tmp_path / "data", "--transport", "simulated")
    try:
        script = "set -euo pipefail\n" + "\n".join(blocks).replace("http://127.0.0.1:3000", server.url)
        result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=clean_env(), capture_output=True,
                                text=True, timeout=90)
        assert result.returncode == 0, result.stderr
        assert '"success": false' not in result.stdout, result.stdout
        assert result.stdout.count('"success": true') >= 18, result.stdout
        assert (tmp_path / "qr.png").read_bytes().startswith(b"\x89PNG")
        assert b"<svg" in (tmp_path / "qr.svg").read_bytes()
        assert '"status": "connected"' in result.stdout and '"status": "queued"' in result.stdout
        assert '"removed": true' in result.stdout
    finally:
        server.kill()
