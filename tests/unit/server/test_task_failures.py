"""A background loop's failures: the first unexpected one with its traceback, repeats quiet,
recovery once (server/task_failures.py, used by every loop in server/runtime.py)."""

from __future__ import annotations

import logging

import pytest

from plastron.errors import DataStoreError
from plastron.server.task_failures import FailureReporter

log = logging.getLogger("plastron.test.task_failures")


def _bug() -> Exception:
    try:
        {}["missing"]
    except KeyError as exc:
        return exc
    raise AssertionError


def test_an_unexpected_failure_is_logged_once_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=log.name)
    reporter = FailureReporter("ca-rotator", log)
    for _ in range(5):
        reporter.failed(_bug())
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1
    record = errors[0]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    assert "task=ca-rotator" in record.getMessage()
    assert "Traceback" in caplog.text and "_bug" in caplog.text
    assert reporter.failures == 5
    quiet = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(quiet) == 4 and "failures=5" in quiet[-1].getMessage()


def test_an_expected_failure_is_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=log.name)
    reporter = FailureReporter("prune", log)
    reporter.failed(DataStoreError("datastore: database is locked"))
    reporter.failed(DataStoreError("datastore: database is locked"))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert warnings[0].exc_info is None
    assert "error=datastore: database is locked" in warnings[0].getMessage()


def test_a_new_error_is_reported_and_recovery_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=log.name)
    reporter = FailureReporter("bundle-poll", log)
    reporter.failed(DataStoreError("datastore: connection refused"))
    reporter.failed(_bug())
    reporter.succeeded()
    reporter.succeeded()
    reporter.failed(DataStoreError("datastore: connection refused"))
    lines = [(r.levelname, r.getMessage().split(" task=")[0]) for r in caplog.records]
    assert lines == [
        ("WARNING", "background task failed"),
        ("ERROR", "background task failed unexpectedly"),
        ("INFO", "background task recovered"),
        ("WARNING", "background task failed"),  # a new streak is reported again
    ]
    assert "after_failures=2" in caplog.records[2].getMessage()
