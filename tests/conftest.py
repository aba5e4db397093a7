"""Fixtures and hooks shared by every test folder.

SoftHSM2 reads ``SOFTHSM2_CONF`` once per process, so the session-scoped ``softhsm_dir`` must be
defined exactly once for the whole suite (here), not per folder: each pytest-xdist worker gets
one token directory, and every test gets a fresh token label in it (``softhsm_token``).

The bad-input suite (tests/fuzz) counts its inputs per boundary; the hooks below print the table
at the end of the run, summed over pytest-xdist workers.

Hypothesis runs under one profile: no per-example deadline and no "too slow" health check. On a
loaded 2-core CI machine generating a complex example can take longer than Hypothesis expects,
which fails the test without any bug in the code under test; what a property test checks is the
property, never the time (tests assert behaviour, not wall-clock times).
"""

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from softhsm_token import softhsm_dir, softhsm_token  # noqa: F401

from tests.fuzz import fuzzing

settings.register_profile("plastron", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("plastron")


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(fuzzing.XdistCounts(), "plastron-fuzz-counts")


def pytest_sessionfinish(session: pytest.Session) -> None:
    fuzzing.session_finished(session.config)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    fuzzing.write_summary(terminalreporter)
