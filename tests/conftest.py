"""Fixtures and hooks shared by every test folder.

SoftHSM2 reads ``SOFTHSM2_CONF`` once per process, so the session-scoped ``softhsm_dir`` must be
defined exactly once for the whole suite (here), not per folder: each pytest-xdist worker gets
one token directory, and every test gets a fresh token label in it (``softhsm_token``).

The bad-input suite (tests/fuzz) counts its inputs per boundary; the hooks below print the table
at the end of the run, summed over pytest-xdist workers.
"""

from typing import Any

import pytest
from softhsm_token import softhsm_dir, softhsm_token  # noqa: F401

from tests.fuzz import fuzzing


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(fuzzing.XdistCounts(), "plastron-fuzz-counts")


def pytest_sessionfinish(session: pytest.Session) -> None:
    fuzzing.session_finished(session.config)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    fuzzing.write_summary(terminalreporter)
