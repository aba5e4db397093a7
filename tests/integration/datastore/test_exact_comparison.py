"""Every stored string compares byte for byte on every database: SPIFFE IDs and selectors that
differ only in letter case or in trailing spaces are different values (MariaDB's default
collations fold case, and its ``_bin`` collations still ignore trailing spaces)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from datastore_builders import entry, node, sel, sid
from sqlalchemy import text

from plastron.clock import ManualClock
from plastron.server.datastore import migrate
from plastron.server.datastore.config import SqlConfig
from plastron.server.datastore.engine import build_engine
from plastron.server.datastore.store import SqlDataStore, open_datastore


async def test_ids_differing_only_in_case_are_distinct(ds: SqlDataStore) -> None:
    upper = await ds.create_entry(entry("/Web", "unix:user:Alice"))
    lower = await ds.create_entry(entry("/web", "unix:user:alice"))
    found, _ = await ds.list_entries(by_spiffe_id=sid("/web"))
    assert [e.entry_id for e in found] == [lower.entry_id]
    found, _ = await ds.list_entries(by_parent_id=sid("/spire/server"), by_spiffe_id=sid("/Web"))
    assert [e.entry_id for e in found] == [upper.entry_id]
    await ds.create_attested_node(node("Node-A", "tpm:Rack:1"))
    assert await ds.fetch_attested_node(sid("/spire/agent/join_token/node-a")) is None
    assert await ds.fetch_attested_node(sid("/spire/agent/join_token/Node-A")) is not None


async def test_selectors_differing_only_in_case_are_distinct(ds: SqlDataStore) -> None:
    upper = await ds.create_entry(entry("/w", "unix:user:Alice"))
    lower = await ds.create_entry(entry("/w", "unix:user:alice"))  # not a "similar entry"
    for value, want in (("unix:user:alice", lower), ("unix:user:Alice", upper)):
        for match in ("exact", "any", "superset"):
            found, _ = await ds.list_entries(by_selectors=((sel(value),), match))
            assert [e.entry_id for e in found] == [want.entry_id], (value, match)
    assert await ds.list_entries(by_selectors=((sel("UNIX:user:alice"),), "any")) == ([], "")
    await ds.upsert_attested_node_with_selectors(node("n1", "tpm:Rack:1"))
    assert await ds.count_attested_nodes(by_selectors=((sel("tpm:rack:1"),), "any")) == 0
    assert await ds.count_attested_nodes(by_selectors=((sel("tpm:Rack:1"),), "any")) == 1


async def test_selectors_differing_only_in_trailing_space_are_distinct(ds: SqlDataStore) -> None:
    bare = await ds.create_entry(entry("/w", "docker:label:env:prod"))
    spaced = await ds.create_entry(entry("/w", "docker:label:env:prod "))
    found, _ = await ds.list_entries(by_selectors=((sel("docker:label:env:prod"),), "exact"))
    assert [e.entry_id for e in found] == [bare.entry_id]
    found, _ = await ds.list_entries(by_selectors=((sel("docker:label:env:prod "),), "any"))
    assert [e.entry_id for e in found] == [spaced.entry_id]
    assert (await ds.fetch_entry(spaced.entry_id)).selectors == (sel("docker:label:env:prod "),)  # type: ignore[union-attr]
    await ds.upsert_attested_node_with_selectors(node("n1", "tpm:rack "))
    assert await ds.count_attested_nodes(by_selectors=((sel("tpm:rack"),), "any")) == 0


async def test_upgrading_an_existing_database_keeps_values_and_makes_them_exact(
    scratch_db: SqlConfig,
) -> None:
    """A database created at revision 0001 (VARCHAR with _bin collations on MariaDB), holding
    non-ASCII and space-ended selectors, is upgraded by the next open; values come back
    unchanged and compare exactly from then on."""
    eng = build_engine(scratch_db)
    with eng.connect() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", migrate.SCRIPT_LOCATION)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        for name, value in (("n1", "Rack é "), ("n2", "rack é")):
            agent = f"spiffe://example.org/spire/agent/join_token/{name}"
            conn.execute(
                text(
                    "INSERT INTO attested_node_entries (spiffe_id, data_type, serial_number,"
                    " expires_at, new_serial_number, new_expires_at, can_reattest,"
                    " agent_version, node_data) VALUES (:id, 'join_token', '1', 2000000000,"
                    " '', 0, false, '', :blank)"
                ),
                {"id": agent, "blank": b""},
            )
            conn.execute(
                text(
                    "INSERT INTO node_resolver_map_entries (spiffe_id, type, value)"
                    " VALUES (:id, 'tpm', :value)"
                ),
                {"id": agent, "value": value},
            )
        conn.commit()
    eng.dispose()
    ds = await open_datastore(scratch_db, clock=ManualClock())  # migrates to the head
    try:
        n1 = sid("/spire/agent/join_token/n1")
        assert await ds.get_node_selectors(n1) == (sel("tpm:Rack é "),)
        for value, count in (("tpm:Rack é", 0), ("tpm:Rack é ", 1), ("tpm:rack é", 1)):
            found = await ds.count_attested_nodes(by_selectors=((sel(value),), "any"))
            assert found == count, value
    finally:
        await ds.close()
