"""The raw limit of bench/conn_memory.py: a plain asyncio TLS server and bare idle connections.

Run as ``conn_memory_raw.py serve DIR`` it writes a self-signed P-256 certificate to DIR,
serves TLS on a free 127.0.0.1 port with a protocol that does nothing (prints the port), and
runs until killed. Run as ``conn_memory_raw.py connect PORT CAFILE N`` it opens N TLS
connections to it, prints "ready" and holds them until its stdin closes.
"""

from __future__ import annotations

import asyncio
import resource
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography import x509

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.pki import self_signed


def _raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _serve(directory: Path) -> None:
    cert, key = self_signed("localhost", sans=[x509.DNSName("localhost")]).write(
        directory / "cert.pem", directory / "key.pem"
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=ctx, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


async def _connect(port: int, cafile: str, count: int) -> None:
    ctx = ssl.create_default_context(cafile=cafile)
    loop = asyncio.get_running_loop()
    held = []
    for start in range(0, count, 100):
        held += await asyncio.gather(
            *(
                loop.create_connection(
                    asyncio.Protocol, "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
                )
                for _ in range(min(100, count - start))
            )
        )
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)


def raw_server_process() -> tuple[subprocess.Popen[str], int, str]:
    """The plain TLS server's process, its port and the CA file a client trusts it with."""
    directory = Path(tempfile.mkdtemp(prefix="pconnraw-", dir="/tmp"))
    server = subprocess.Popen(
        [sys.executable, __file__, "serve", str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    return server, int(server.stdout.readline()), str(directory / "cert.pem")


def bare_connections(port: int, cafile: str, count: int) -> list[subprocess.Popen[str]]:
    """A client process holding ``count`` idle TLS connections (closing its stdin ends it)."""
    client = subprocess.Popen(
        [sys.executable, __file__, "connect", str(port), cafile, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdout is not None
    if client.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the bare TLS client failed (exit {client.wait()})")
    return [client]


if __name__ == "__main__":
    _raise_nofile()
    if sys.argv[1] == "serve":
        asyncio.run(_serve(Path(sys.argv[2])))
    else:
        asyncio.run(_connect(int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
