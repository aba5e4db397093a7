"""The server halves of the TPM attestors run on machines without a TPM: loading them (and
verifying with them) must not import tpm2-pytss, so the server needs no libtss2 at run time."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_server_loads_tpm_attestors_without_tpm2_pytss() -> None:
    code = textwrap.dedent(
        """
        import sys
        from plastron.server.plugin_loading import load_server_plugins
        attestors = load_server_plugins().server_node_attestors
        from plastron.tpm.attestor import TpmServerAttestor
        from plastron.tpm.devid import TpmDevidServerAttestor
        assert "tpm" in attestors and "tpm_devid" in attestors
        loaded = sorted(m for m in sys.modules if m.startswith("tpm2_pytss"))
        print(loaded)
        sys.exit(1 if loaded else 0)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
