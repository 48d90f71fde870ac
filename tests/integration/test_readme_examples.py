"""The README's curl examples work as written against the real server."""

import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SECTIONS = ["Writing", "JSON queries", "SQL", "Deleting data and retention"]


def _bash_blocks(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    part = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", part, re.S)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_examples(server):
    blocks = [b for s in SECTIONS for b in _bash_blocks(s)]
    assert len(blocks) >= 4
    prelude = 'set -e\ncurl() { command curl -sS --fail-with-body "$@"; echo; }\n'
    for block in blocks:
        script = prelude + block.replace("localhost:8086", f"127.0.0.1:{server.port}")
        r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{block}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    with server.client() as c:
        tables = c.post("/sql", content="SHOW TABLES").json()
    assert tables["measurement"] == "_tables"
