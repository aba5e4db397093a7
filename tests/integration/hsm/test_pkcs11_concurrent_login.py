"""Several processes logging in to one SoftHSM2 token at once, as the server's signing workers
do when the first batch arrives (hsm/session.py, ``BUSY_TOKEN_ERRORS``).

SoftHSM2's file store rewrites ``token.object`` at every login and logout; a process reading it
at that moment sees no token, a token without a user PIN, or a general error. Before opens of a
busy token were retried, about two in three of the opens below failed that way, and a signing
worker that failed sat out its reopen backoff while the server signed in its place.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from typing import Any

import pytest
from softhsm_token import SoftHsmToken

from plastron.errors import PlastronError
from plastron.hsm.config import parse_pkcs11_config
from plastron.hsm.session import open_token_session

pytestmark = pytest.mark.softhsm

PROCESSES = 4
ROUNDS = 40


def open_and_close(plugin_data: dict[str, Any], rounds: int) -> Counter[str]:
    """In a fresh process: open the token's shared session and close it, ``rounds`` times."""
    config = parse_pkcs11_config(plugin_data)
    outcomes: Counter[str] = Counter()
    for _ in range(rounds):
        try:
            open_token_session(config).close()
            outcomes["opened"] += 1
        except PlastronError as exc:
            outcomes[str(exc)] += 1
    return outcomes


def test_processes_logging_in_together_all_open_the_token(softhsm_token: SoftHsmToken) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(PROCESSES) as pool:
        results = pool.starmap(open_and_close, [(softhsm_token.plugin_data(), ROUNDS)] * PROCESSES)
    outcomes = sum(results, Counter[str]())
    assert outcomes == Counter({"opened": PROCESSES * ROUNDS})
