"""``plastron-oidc-discovery`` with ``workload_api {}``: the provider (a real process,
registered as a workload by its uid) reads the JWT bundle from an agent's Workload API, and a
relying party verifies a JWT-SVID with PyJWKClient at the discovered ``jwks_uri``; a new JWT
authority in the agent's bundle reaches the JWKS."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
from agent_authority import entry
from agent_workload_env import WorkloadApiEnv
from cryptography.hazmat.primitives.asymmetric import ec

from plastron.spiffe.bundle import JwtAuthority
from tests.processes import free_port, poll, stop_process

UID = f"unix:uid:{os.geteuid()}"


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def kids(base: str) -> set[str]:
    return {k["kid"] for k in get_json(base + "/keys")["keys"]}


async def test_provider_reads_keys_from_the_workload_api(
    workload_api: WorkloadApiEnv, short_dir: Path
) -> None:
    env = workload_api
    env.cache.set_entries([entry("oidc", env.ca.td, "/oidc-provider", UID)])
    env.cache.set_x509_svids({"oidc": env.ca.svid("/oidc-provider")})
    port = free_port()
    conf = short_dir / "oidc.conf"
    conf.write_text(
        f"""
domains = ["localhost"]
insecure_addr = "127.0.0.1:{port}"
allow_insecure_scheme = true
workload_api {{
  socket_path = "{env.socket_path}"
  trust_domain = "example.org"
  poll_interval = "1s"
}}
"""
    )
    log = open(short_dir / "oidc.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "plastron.oidc.main", "-config", str(conf)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://localhost:{port}"
    try:
        # The Workload API runs on this event loop: the blocking client runs in threads.
        await asyncio.to_thread(poll, "keys served", lambda: env.ca.jwt_kid in kids(base))
        doc = await asyncio.to_thread(get_json, base + "/.well-known/openid-configuration")
        assert doc["jwks_uri"] == base + "/keys"
        token = env.ca.jwt(env.ca.td.spiffe_id("/w"), ("rp",)).token
        client = jwt.PyJWKClient(doc["jwks_uri"])
        key = await asyncio.to_thread(client.get_signing_key_from_jwt, token)
        claims = jwt.decode(token, key, algorithms=["ES256"], audience="rp")
        assert claims["sub"] == "spiffe://example.org/w"

        added = JwtAuthority("kid-next", ec.generate_private_key(ec.SECP256R1()).public_key())
        bundle = env.ca.bundle
        env.cache.set_bundle(replace(bundle, jwt_authorities=(*bundle.jwt_authorities, added)))
        await asyncio.to_thread(poll, "new key served", lambda: "kid-next" in kids(base))
    finally:
        stop_process(proc)
        log.close()
