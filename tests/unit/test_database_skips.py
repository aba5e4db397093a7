"""The switch that makes an unreachable PostgreSQL or MariaDB a failure in CI: with ``CI=true``
the datastore tests fail, without it they skip (a developer machine may lack the servers)."""

from __future__ import annotations

import pytest

from tests.integration.datastore.datastore_databases import admin_engine
from tests.processes import free_port

CLOSED = {
    "postgres": "postgresql+psycopg://postgres@127.0.0.1:{port}/postgres?connect_timeout=5",
    "mysql": "mysql+pymysql://root@127.0.0.1:{port}/?connect_timeout=5",
}


def outcome(kind: str) -> tuple[str, str]:
    """What the helper does for a server where nothing listens: ("fail" | "skip", message)."""
    url = CLOSED[kind].format(port=free_port())
    try:
        admin_engine(kind, url)
    except pytest.fail.Exception as exc:
        return "fail", str(exc)
    except pytest.skip.Exception as exc:
        return "skip", str(exc)
    raise AssertionError(f"{kind}: a closed port answered")


@pytest.mark.parametrize("kind", sorted(CLOSED))
@pytest.mark.parametrize("ci", ["true", "1"])
def test_unreachable_database_fails_in_ci(
    kind: str, ci: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", ci)
    result, message = outcome(kind)
    assert result == "fail", message
    assert message.startswith(f"{kind} server not reachable: OperationalError"), message


@pytest.mark.parametrize("kind", sorted(CLOSED))
@pytest.mark.parametrize("ci", [None, "", "false"])
def test_unreachable_database_skips_outside_ci(
    kind: str, ci: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    result, message = outcome(kind)
    assert result == "skip", message
    assert message.startswith(f"{kind} server not reachable: OperationalError"), message
