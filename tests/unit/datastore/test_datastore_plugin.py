"""The DataStore as a plugin: the server builds it through its registry from the ``DataStore``
block, an unknown name is refused with the known ones, the sql store's plugin_data has the one
plugin error format, and with no block the store is SQLite in data_dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from plastron.datastore import DataStore
from plastron.errors import ConfigError
from plastron.records import RegistrationEntry
from plastron.selector import Selector
from plastron.server.config import ServerConfig, parse_server_config
from plastron.server.plugin_loading import (
    build_datastore,
    check_server_plugins,
    load_server_plugins,
)
from plastron.spiffe.ids import SpiffeId, TrustDomain
from tests.datastore_faults import FaultInjectingDataStore, registries_with_faults

TD = TrustDomain("example.org")


def config(data_dir: Path, plugins: str = "") -> ServerConfig:
    return parse_server_config(
        f'server {{ trust_domain = "example.org"  data_dir = "{data_dir}" }}\n'
        f'plugins {{ NodeAttestor "join_token" {{}}\n{plugins} }}'
    )


async def build(cfg: ServerConfig) -> DataStore:
    registries = load_server_plugins()
    context = registries.context(trust_domain=TD, data_dir=cfg.data_dir)
    return await build_datastore(cfg, registries, context)


async def test_without_a_block_the_store_is_sqlite_in_data_dir(tmp_path: Path) -> None:
    store = await build(config(tmp_path))
    try:
        entry = RegistrationEntry(
            "", SpiffeId.parse("spiffe://example.org/w"), SpiffeId.parse("spiffe://example.org/n"),
            (Selector("unix", "uid:1"),),
        )  # fmt: skip
        [created] = await store.create_entries([entry])
        assert isinstance(created, RegistrationEntry)
        assert await store.fetch_entry(created.entry_id) == created
    finally:
        await store.close()
    assert (tmp_path / "datastore.sqlite3").is_file()
    assert (tmp_path / "join_token.key").is_file()  # the sql store's join tokens are keyed


async def test_an_unknown_datastore_is_refused_with_the_known_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'^unknown DataStore "mongodb"; known: sql$'):
        await build(config(tmp_path, 'DataStore "mongodb" { plugin_data {} }'))
    assert not (tmp_path / "datastore.sqlite3").exists()


@pytest.mark.parametrize(
    ("plugin_data", "message"),
    [
        (
            'database_type = "oracle"',
            r"^plugins\.DataStore\.sql\.plugin_data\.database_type must be one of sqlite3,"
            r" postgres, mysql \('oracle'\)$",
        ),
        (
            "max_open_conns = 0",
            r"^plugins\.DataStore\.sql\.plugin_data\.max_open_conns must be between 1 and",
        ),
        ('dbtype = "sqlite3"', r'^unknown key "plugins\.DataStore\.sql\.plugin_data\.dbtype"$'),
    ],
)
async def test_sql_plugin_data_errors_name_the_key(
    tmp_path: Path, plugin_data: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        await build(config(tmp_path, f'DataStore "sql" {{ plugin_data {{ {plugin_data} }} }}'))


def test_checking_a_config_reads_the_store_settings_and_opens_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"plugin_data\.max_open_conns must be between 1 and"):
        check_server_plugins(
            config(tmp_path, 'DataStore "sql" { plugin_data { max_open_conns = 0 } }'),
            load_server_plugins(),
        )
    with pytest.raises(ConfigError, match=r'^unknown DataStore "mongodb"; known: sql$'):
        check_server_plugins(config(tmp_path, 'DataStore "mongodb" {}'), load_server_plugins())
    check_server_plugins(config(tmp_path / "data"), load_server_plugins())
    assert list(tmp_path.iterdir()) == []  # no database file, no join-token key, no data_dir


async def test_another_registered_store_is_built_by_its_name(tmp_path: Path) -> None:
    cfg = config(tmp_path, 'DataStore "fault_injecting" { plugin_data {} }')
    registries = registries_with_faults()
    context = registries.context(trust_domain=TD, data_dir=tmp_path)
    store = await build_datastore(cfg, registries, context)
    try:
        assert isinstance(store, FaultInjectingDataStore)
        await store.health_check()
        with pytest.raises(ValueError, match="'create_entry' is not a DataStore method"):
            store.fail_next("create_entry", RuntimeError())
    finally:
        await store.close()
