"""Run ``plastron-server`` or ``plastron-agent`` as if some third-party modules were not
installed: ``python without_modules.py pkcs11,psycopg server validate -config server.conf``.

A ``None`` in ``sys.modules`` makes ``import pkcs11`` raise ModuleNotFoundError naming
``pkcs11``, exactly as on an install without the ``[hsm]`` extra; Plastron's own code runs
unchanged.
"""

from __future__ import annotations

import sys


def main() -> int:
    blocked = [m for m in sys.argv[1].split(",") if m]
    role, argv = sys.argv[2], sys.argv[3:]
    for module in blocked:
        sys.modules[module] = None  # type: ignore[assignment]
    if role == "server":
        from plastron.server.cli.main import main as cli  # noqa: PLC0415
    else:
        from plastron.agent.cli.main import main as cli  # noqa: PLC0415
    return cli(argv)


if __name__ == "__main__":
    raise SystemExit(main())
