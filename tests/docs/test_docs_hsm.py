"""docs/hsm.md's SoftHSM2 set-up, run as written from the checkout in private namespaces
(tests/docs/doc_shell.py): the token exists, its PIN is in the file the page's config names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.docs.doc_blocks import REPO, block_tested_by
from tests.docs.doc_shell import needs_namespaces, run_page

pytestmark = [
    needs_namespaces,
    pytest.mark.skipif(shutil.which("softhsm2-util") is None, reason="needs SoftHSM2"),
]


def test_softhsm_setup_block(tmp_path: Path) -> None:
    block = block_tested_by(__file__, "test_softhsm_setup_block")
    run = run_page(
        tmp_path,
        [
            f"cd {REPO}",
            block,
            "export SOFTHSM2_CONF=/var/lib/plastron/softhsm/softhsm2.conf",
            'softhsm2-util --show-slots > "$RESULTS/slots.txt"',
            'stat -c %a /etc/plastron/hsm.pin > "$RESULTS/pin-mode.txt"',
        ],
    )
    assert run.returncode == 0, run.failure()
    printed = run.output_of(block)
    assert printed == "export SOFTHSM2_CONF=/var/lib/plastron/softhsm/softhsm2.conf\n", printed
    assert "Label:            plastron-ca" in (tmp_path / "results" / "slots.txt").read_text()
    assert (tmp_path / "results" / "pin-mode.txt").read_text() == "600\n"
