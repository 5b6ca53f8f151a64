"""docs/api.md's script example runs as a plain `python` script (no IPython) on the local target
and file store under a temporary XT_HOME, and prints exactly the output the page shows."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

API_MD = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def example() -> tuple[str, str]:
    """(the script block, the output block after it)."""
    text = API_MD.read_text()
    found = re.search(r"<!-- tests/test_api_script.py[^\n]*-->\n```python\n(.*?)```\s*\n"
                      r"Its output:\n```text\n(.*?)```", text, re.S)
    assert found, "docs/api.md lost its marked script example and output blocks"
    return found.group(1), found.group(2)


def test_the_documented_script_runs_and_prints_what_the_page_says(xt_home, tmp_path):
    code, expected = example()
    # the example shows what the issue asks of the API: a function and a cell with an hp dict
    assert re.search(r"xt\.submit\(fit, ", code) and re.search(r"xt\.run_cell\([^\n]*\bhp=", code)
    assert "import xt_magic as xt" in code and "get_ipython" not in code
    script = tmp_path / "work" / "example.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=script.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == expected
    # the jobs are real ones in this XT_HOME's file store
    jobs = sorted(p.name for p in (xt_home / "file_store" / "ws1" / "jobs").iterdir())
    assert jobs == ["job1", "job2", "job3"]
