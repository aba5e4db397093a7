"""Token exchanges per second: ``POST /api/v1/token`` with a GCP identity token for a JWT-SVID,
on a real ``plastron-server run`` over SQLite and over PostgreSQL, beside a raw JWT-SVID sign
(the CA's signing step alone, in this process) measured in the same run.

Each exchange is a fresh TLS connection (the listener answers one request per connection), a
gcp_iit verification (RS256 against a JWKS file), an entry lookup, the replay record (one
INSERT) and a JWT-SVID signature. The client runs ``--concurrency`` exchanges at once, each with
its own pre-signed, never-used token.

    .venv/bin/python bench/token_exchange.py [--exchanges 1000] [--concurrency 16]
        [--backends sqlite3,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from datastore_bench import new_database  # noqa: E402

from plastron.spiffe.ids import SpiffeId, TrustDomain  # noqa: E402
from plastron.spiffe.jwtsvid import mint_jwt_svid  # noqa: E402
from tests.cloud.gcp import gcp_claims  # noqa: E402
from tests.cloud.tokens import Issuer  # noqa: E402
from tests.processes import free_port, log_tail, wait_until_serving  # noqa: E402

TD = "bench.example"
AUDIENCE = ["https://api.bench.example"]
START_DEADLINE = 60.0


def server_config(base: Path, datastore: tuple[str, str], exchange_port: int) -> str:
    kind, connection = datastore
    return f"""
server {{
  trust_domain = "{TD}"
  bind_address = "127.0.0.1"
  bind_port = {free_port()}
  socket_path = "{base}/api.sock"
  data_dir = "{base}/data"
  log_level = "WARN"
  agentless_exchange {{
    bind_address = "127.0.0.1"
    bind_port = {exchange_port}
    rate_limit_per_second = 0
  }}
}}
plugins {{
  DataStore "sql" {{ plugin_data {{
    database_type = "{kind}"
    connection_string = "{connection}"
  }} }}
  KeyManager "memory" {{ plugin_data {{}} }}
  NodeAttestor "join_token" {{ plugin_data {{}} }}
  NodeAttestor "gcp_iit" {{ plugin_data {{
    projectid_allow_list = ["proj-a"]
    jwks_file = "{base}/jwks.json"
  }} }}
}}
"""


def start_server(base: Path) -> subprocess.Popen[bytes]:
    with open(base / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plastron.server.cli.main", "run", "-config",
             str(base / "server.conf")],
            stdout=log, stderr=subprocess.STDOUT, cwd=base,
        )  # fmt: skip
    wait_until_serving(
        proc, str(base / "api.sock"), START_DEADLINE, lambda: log_tail(base / "server.log", 2000)
    )
    return proc


def cli(base: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "plastron.server.cli.main", *args,
         "-socketPath", str(base / "api.sock")],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return out.stdout


async def one_exchange(port: int, tls: ssl.SSLContext, token: str) -> None:
    body = json.dumps({"audience": AUDIENCE}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    head = (
        "POST /api/v1/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    answer = await reader.read()
    writer.close()
    if not answer.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(answer[:300].decode(errors="replace"))


async def exchanges_per_second(
    port: int, tls: ssl.SSLContext, tokens: list[str], concurrency: int
) -> float:
    queue = iter(tokens)

    async def worker() -> None:
        for token in queue:
            await one_exchange(port, tls, token)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(tokens) / (time.perf_counter() - start)


def raw_jwt_signs_per_second(seconds: float = 1.0) -> float:
    key = ec.generate_private_key(ec.SECP256R1())
    sid = SpiffeId(TrustDomain(TD), "/lambda/bench")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        mint_jwt_svid(
            spiffe_id=sid, audience=AUDIENCE, issued_at=now,
            expires_at=now + dt.timedelta(minutes=5), key=key, key_id="k",
        )  # fmt: skip
        count += 1
    return count / (time.perf_counter() - start)


def run_backend(kind: str, exchanges: int, concurrency: int, google: Issuer) -> float:
    base = Path(tempfile.mkdtemp(prefix="pl-xbench-", dir="/tmp"))
    config, drop = new_database(kind, base)
    port = free_port()
    proc: subprocess.Popen[bytes] | None = None
    try:
        (base / "jwks.json").write_text(google.jwks())
        datastore = (kind, config.connection_string)
        (base / "server.conf").write_text(server_config(base, datastore, port))
        proc = start_server(base)
        cli(
            base,
            "entry",
            "create",
            "-parentID",
            f"spiffe://{TD}/spire/agentless/gcp_iit",
            "-spiffeID",
            f"spiffe://{TD}/lambda/bench",
            "-selector",
            "gcp_iit:project-id:proj-a",
        )
        tls = ssl.create_default_context(cadata=cli(base, "bundle", "show"))
        tls.check_hostname = False  # the listener serves the server SVID (a SPIFFE ID)
        ids = itertools.count(1)
        tokens = [google.sign(gcp_claims(str(next(ids)))) for _ in range(exchanges)]
        return asyncio.run(exchanges_per_second(port, tls, tokens, concurrency))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        drop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--backends", default="sqlite3,postgres")
    args = parser.parse_args()
    google = Issuer.make(31)
    raw: Callable[[], float] = raw_jwt_signs_per_second
    rows = [("raw JWT-SVID sign (EC P-256, in process)", statistics.median(raw() for _ in "abc"))]
    for kind in args.backends.split(","):
        rate = run_backend(kind, args.exchanges, args.concurrency, google)
        rows.append((f"token exchange over HTTPS, {kind} (c={args.concurrency})", rate))
    rows.append(("raw JWT-SVID sign, again (same run)", raw()))
    width = max(len(name) for name, _ in rows)
    print(f"{'figure':<{width}}  {'per second':>12}  {'vs raw sign':>12}")
    for name, rate in rows:
        print(f"{name:<{width}}  {rate:>12.0f}  {rate / rows[0][1]:>11.1%}")


if __name__ == "__main__":
    main()
