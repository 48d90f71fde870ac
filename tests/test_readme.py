"""The README's examples work as written."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _python_blocks(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    part = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", part, re.S)


def test_embedding_example_runs(tmp_path):
    (code,) = _python_blocks("Embedding")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "'usage': 1.5" in r.stdout
    assert "serving on" in r.stdout
    assert (tmp_path / "data" / "LOCK").exists()


def test_readme_starts_with_the_two_commands():
    first = (ROOT / "README.md").read_text().split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert first[0].startswith("bash run.sh server")
    assert first[1].startswith("bash run.sh test")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash run.sh test" in ci
