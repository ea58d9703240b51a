"""The README's runnable example runs and learns."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_runs_and_adapts():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    mse = float(re.search(r"after 10 steps ([\d.]+)", out).group(1))
    assert mse < 3.0  # an untrained regressor is near the sine's variance (about 4.2)


def test_readme_example_is_the_quickstart():
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "quickstart.py").read_text()
    body = example.split('"""', 2)[2].strip()
    assert body in readme, "README's example drifted from examples/quickstart.py"
