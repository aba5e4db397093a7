"""How a server background loop (CA rotation, bundle poll, entry cache...) reports failures.

A loop retries on its own schedule, so the same failure can repeat every few seconds for as
long as, say, the database is down. Logging each one buries the first, which is the one that
matters, and a bug (an exception that is not a PlastronError) needs its traceback to be fixed.
So: the first failure of a streak is logged, with its traceback when it is unexpected; repeats
of the same error are DEBUG; a different error starts a new report; success after failures is
logged once at INFO.
"""

from __future__ import annotations

import logging

from plastron.errors import PlastronError


class FailureReporter:
    """Failure and recovery lines for one background loop, named ``task``."""

    def __init__(self, task: str, logger: logging.Logger) -> None:
        self.task = task
        self._log = logger
        self._failures = 0
        self._last_error = ""

    @property
    def failures(self) -> int:
        """Consecutive failures since the last success."""
        return self._failures

    def failed(self, exc: Exception) -> None:
        self._failures += 1
        error = f"{type(exc).__name__}: {exc}"
        if error == self._last_error:
            self._log.debug(
                "background task still failing task=%s failures=%d error=%s",
                self.task,
                self._failures,
                exc,
            )
            return
        self._last_error = error
        if isinstance(exc, PlastronError):  # an expected condition: its message says it all
            self._log.warning("background task failed task=%s error=%s", self.task, exc)
        else:
            self._log.error(
                "background task failed unexpectedly task=%s error=%s", self.task, error,
                exc_info=exc,
            )  # fmt: skip

    def succeeded(self) -> None:
        if self._failures:
            self._log.info(
                "background task recovered task=%s after_failures=%d", self.task, self._failures
            )
        self._failures = 0
        self._last_error = ""
