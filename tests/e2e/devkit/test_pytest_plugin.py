"""``pytest -p plastron.testing`` used as an outside project uses it: a temporary project with
its own test file (the one docs/testing-with-plastron.md shows), which knows nothing of this
repository, run by pytest in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
DOC = Path(__file__).resolve().parents[3] / "docs" / "testing-with-plastron.md"

pytestmark = pytest.mark.softhsm


def documented_test_file() -> str:
    """The example test file of docs/testing-with-plastron.md: the docs run as written."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert len(blocks) == 1
    return str(blocks[0])


def test_an_outside_project_gets_real_svids_through_the_plugin(tmp_path: Path) -> None:
    project = tmp_path / "outside-project"
    project.mkdir()
    # Its own rootdir: neither this repository's conftest nor its pytest settings apply.
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_identity.py").write_text(documented_test_file())
    run = subprocess.run(
        [*PYTEST, "-p", "plastron.testing", "-q", "--plastron-trust-domain", "outside.test"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "3 passed" in run.stdout
