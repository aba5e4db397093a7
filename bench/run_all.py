"""`make bench`: every benchmark at a size that fits in a few minutes, one after another.

Each script prints its own table (figure, raw limit measured in the same run, ratio). Pass
``--full`` to run them at their own default (larger) sizes; any other flags are ignored.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# script, quick-mode arguments
BENCHMARKS: list[tuple[str, list[str]]] = [
    ("pkcs11_raw.py", ["--seconds", "0.5", "--runs", "3"]),
    ("datastore_bench.py", ["--entries", "2000", "--runs", "3"]),
    ("server_api.py", ["--entries", "10000"]),
    ("scale.py", ["--entries", "10000", "--runs", "3"]),
    ("issuance.py", []),
    ("agent_workload_api.py", ["--runs", "1"]),
    ("propagation.py", ["--agents", "200", "--runs", "20", "--poll-runs", "3"]),
    ("conn_memory.py", ["--steps", "200,1000", "--clients", "2"]),
    ("ha_lag.py", ["--seconds", "5", "--intervals", "1s,250ms"]),
    ("tpm_attest.py", ["--rounds", "20"]),
    ("tpm_attest_server.py", ["--rounds", "15", "--seconds", "3"]),
    ("tpm_tls_handshake.py", ["--rounds", "30"]),
    ("attest_server.py", ["--rounds", "10", "--seconds", "2"]),
    ("token_exchange.py", []),
]


def main() -> int:
    full = "--full" in sys.argv[1:]
    failed = []
    for script, quick_args in BENCHMARKS:
        path = HERE / script
        if not path.exists():
            continue
        args = [] if full else quick_args
        print(f"\n### {script} {' '.join(args)}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(path), *args])
        print(f"### {script}: exit {code} in {time.monotonic() - started:.0f}s", flush=True)
        if code != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
