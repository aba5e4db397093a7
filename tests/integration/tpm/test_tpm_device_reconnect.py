"""TpmDevice after the TPM goes away and comes back (tpm/device.py): every connection it gave up
is closed. ESAPI closes only a TCTI it loaded from a string; the device hands it a loader, so
before it closed the loader itself each loss of the TPM left a socket open (on a raw /dev/tpm0,
which takes one open at a time, the TPM would have stayed busy for good)."""

from __future__ import annotations

import contextlib
import os

import pytest
from swtpm_fixtures import SwtpmProcess
from tpm2_pytss import ESAPI

from plastron.errors import Unavailable
from plastron.tpm.device import TpmDevice

pytestmark = pytest.mark.swtpm


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def random_bytes(ctx: ESAPI) -> bytes:
    return bytes(ctx.get_random(8))


def test_reconnects_leave_no_connection_open(swtpm: SwtpmProcess) -> None:
    device = TpmDevice(swtpm.tcti)
    device.run("warm-up", random_bytes)
    before = open_sockets()
    for _ in range(3):
        swtpm.kill()
        with pytest.raises(Unavailable):
            device.run("a call while the TPM is gone", random_bytes)
        assert open_sockets() == before  # the failed connection is closed with the context
        swtpm.start()
        assert len(device.run("a call once it is back", random_bytes)) == 8
    assert open_sockets() == before
