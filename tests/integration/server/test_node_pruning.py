"""``prune_attested_nodes_expired_for`` (with ``prune_attested_nodes_batch_size`` and
``prune_tofu_nodes``) on a real server's prune loop (SQLite, a ManualClock)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from plastron.clock import ManualClock
from plastron.datastore import DataStore
from plastron.errors import ConfigError
from plastron.records import AttestedNode
from plastron.server.config import parse_server_config
from plastron.spiffe.ids import SpiffeId

from .server_harness import running_server

HOUR = 3600
AGENT = "spiffe://example.org/spire/agent"


async def _seed(ds: DataStore, now: int) -> None:
    for path, kind, serial, expired_ago, reattest in (
        ("x509pop/old-1", "x509pop", "1", 50 * HOUR, True),
        ("x509pop/old-2", "x509pop", "2", 49 * HOUR, True),
        ("x509pop/recent", "x509pop", "3", 2 * HOUR, True),
        ("x509pop/banned", "x509pop", "", 72 * HOUR, True),
        ("join_token/tofu", "join_token", "4", 72 * HOUR, False),
    ):
        await ds.create_attested_node(
            AttestedNode(
                spiffe_id=SpiffeId.parse(f"{AGENT}/{path}"),
                attestation_type=kind,
                cert_serial=serial,
                cert_not_after=now - expired_ago,
                can_reattest=reattest,
            )
        )


async def _paths(ds: DataStore) -> set[str]:
    nodes, _ = await ds.list_attested_nodes()
    return {str(n.spiffe_id).removeprefix(AGENT + "/") for n in nodes}


async def test_prune_expired_for_in_batches_keeps_banned_and_tofu(tmp_path: Path) -> None:
    clock = ManualClock(dt.datetime.now(dt.UTC))
    extra = 'prune_attested_nodes_expired_for = "24h"\nprune_attested_nodes_batch_size = 1'
    async with running_server(tmp_path, clock=clock, extra_server=extra) as h:
        ds = h.server.datastore
        assert ds is not None
        await _seed(ds, int(clock.now().timestamp()))
        await h.server.prune()  # one a pass: the longest expired first
        assert "x509pop/old-1" not in await _paths(ds)
        await h.server.prune()
        await h.server.prune()
        assert await _paths(ds) == {"x509pop/recent", "x509pop/banned", "join_token/tofu"}


async def test_prune_tofu_nodes_includes_join_token_agents_never_banned(tmp_path: Path) -> None:
    clock = ManualClock(dt.datetime.now(dt.UTC))
    extra = 'prune_attested_nodes_expired_for = "1h"\nprune_tofu_nodes = true'
    async with running_server(tmp_path, clock=clock, extra_server=extra) as h:
        ds = h.server.datastore
        assert ds is not None
        await _seed(ds, int(clock.now().timestamp()))
        await h.server.prune()
        assert await _paths(ds) == {"x509pop/banned"}


async def test_without_the_key_no_agent_is_pruned(tmp_path: Path) -> None:
    async with running_server(tmp_path) as h:
        ds = h.server.datastore
        assert ds is not None
        await _seed(ds, int(dt.datetime.now(dt.UTC).timestamp()))
        await h.server.prune()
        assert len(await _paths(ds)) == 5


@pytest.mark.parametrize("key", ["prune_attested_nodes_batch_size = 5", "prune_tofu_nodes = true"])
def test_companion_keys_alone_are_refused(key: str) -> None:
    text = f'server {{\n trust_domain = "example.org"\n data_dir = "/tmp/x"\n {key}\n}}\n'
    with pytest.raises(ConfigError, match=r"only applies with server\.prune_attested_nodes"):
        parse_server_config(text)
