"""The NodeAttestor conformance suite: the hostile inputs every attestation method must refuse.

Use it by subclassing in a test module and providing an ``adapter`` fixture that returns a
:class:`NodeAttestorAdapter` for the method::

    class TestJoinToken(NodeAttestorConformance):
        @pytest.fixture
        def adapter(self) -> NodeAttestorAdapter:
            return JoinTokenAdapter()

The adapter says how to make a good attempt (a payload and the answers to the server's
challenges, normally from the method's real agent half) and a bad one of each kind the suite
asks for. A case that cannot arise for a method is listed in ``not_applicable`` with the reason,
and the test is skipped with that reason; a case the adapter neither builds nor excuses fails.

Every case runs against a real server on SQLite in a private temporary directory, twice: the
server's attestor called through its own interface (``attest(payload, challenge)``), which must
raise AttestationFailed or InvalidArgument whose message names the method; and the same attempt
through AttestAgent over TLS, which must end with PERMISSION_DENIED, INVALID_ARGUMENT or
RESOURCE_EXHAUSTED (never INTERNAL or UNKNOWN). Either way no node row may appear and nothing
may be logged at ERROR. One case (a replayed transcript) also runs through a real
``plastron-server run`` process.

Cases: a replayed transcript; an answer made for another challenge; truncated and oversize
payloads and answers; a key of the wrong type; expired and not-yet-valid credentials; a chain to
an untrusted CA; an agent ID path built from hostile data (``/``, ``..``, ``%2F``, ``:``,
non-ASCII).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import ClassVar

import pytest
from grpclib.const import Status

from plastron.attestors.base import MAX_ATTESTATION_MESSAGE, AttestationResult
from plastron.errors import AttestationFailed, InvalidArgument
from tests.conformance.nodeattestor_env import (
    Abandon,
    Attempt,
    AttestEnv,
    in_process_env,
    process_env,
)

REFUSED_STATUSES = (Status.PERMISSION_DENIED, Status.INVALID_ARGUMENT, Status.RESOURCE_EXHAUSTED)
# Values an attacker would put where a method builds the agent ID path from attested data.
HOSTILE_PATH_VALUES = {
    "slash": "node/evil",
    "dotdot": "..",
    "percent-2F": "node%2Fevil",
    "colon": "node:evil",
    "non-ascii": "n\u00f6de",
    "unicode-slash": "node\u2215evil",
}
MakeAttempts = Callable[[], Awaitable[list[Attempt]]]


class NodeAttestorAdapter:
    """What the suite needs from one attestation method. Override the hooks that apply; list
    the others in ``not_applicable`` ({case: reason}). Cases: ``challenge`` (the method has no
    challenge round), ``replay`` (the credential is a bearer token the agent legitimately
    presents again until it expires, as k8s_psat's service-account token),
    ``wrong_key_type``, ``expired``, ``not_yet_valid``, ``untrusted_ca``,
    ``hostile_agent_path``."""

    kind: ClassVar[str] = ""
    # The method refuses a replay by trust on first use: an instance whose node record exists
    # may not attest again (cloud instance identity documents, which any process on the VM can
    # obtain anew). The first attempt of a replay is then admitted through AttestAgent, which
    # writes that record, rather than through the attestor alone.
    first_use_only: ClassVar[bool] = False
    # A refusal's message starts with one of these (the method names itself).
    message_prefixes: ClassVar[tuple[str, ...]] = ()
    not_applicable: ClassVar[dict[str, str]] = {}

    def server_plugins(self, case: str) -> str:
        """The server's NodeAttestor block(s) for ``case`` (join_token is always there)."""
        return ""

    async def good(self, env: AttestEnv) -> Attempt:
        """A fresh attempt the server admits (the suite checks that it does)."""
        raise NotImplementedError(f"{self.kind}: the adapter must build a good attempt")

    async def wrong_key_type(self, env: AttestEnv) -> list[Attempt]:
        raise NotImplementedError(f"{self.kind}: wrong_key_type is neither built nor excused")

    async def expired(self, env: AttestEnv) -> list[Attempt]:
        raise NotImplementedError(f"{self.kind}: expired is neither built nor excused")

    async def not_yet_valid(self, env: AttestEnv) -> list[Attempt]:
        raise NotImplementedError(f"{self.kind}: not_yet_valid is neither built nor excused")

    async def untrusted_ca(self, env: AttestEnv) -> list[Attempt]:
        raise NotImplementedError(f"{self.kind}: untrusted_ca is neither built nor excused")

    async def hostile_agent_path(self, env: AttestEnv, value: str) -> list[Attempt]:
        raise NotImplementedError(f"{self.kind}: hostile_agent_path is neither built nor excused")


def _skip_unless_applies(adapter: NodeAttestorAdapter, case: str) -> None:
    reason = adapter.not_applicable.get(case)
    if reason is not None:
        assert reason.strip(), f"{adapter.kind}: {case} is excused without a reason"
        pytest.skip(f"{adapter.kind}: {case} does not apply: {reason}")


def _error_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def expect_refused(
    adapter: NodeAttestorAdapter,
    env: AttestEnv,
    make: MakeAttempts,
    caplog: pytest.LogCaptureFixture,
) -> list[str]:
    """Run the attempts ``make`` builds through the attestor, then (built again: an attempt
    may be single-use) through AttestAgent; each must be refused cleanly with no node row.
    Returns the attestor's messages, for cases that want to say more."""
    messages: list[str] = []
    attempts = await make()
    assert attempts, f"{adapter.kind}: the adapter built no attempt"
    for attempt in attempts:
        before = env.node_rows()
        outcome = await env.attest_direct(adapter.kind, attempt)
        where = f"{adapter.kind} [{attempt.label}] via the attestor"
        assert not isinstance(outcome, AttestationResult), f"{where}: admitted {outcome}"
        assert isinstance(outcome, (AttestationFailed, InvalidArgument)), (
            f"{where}: raised {type(outcome).__name__}: {outcome!r}, not a clean refusal"
        )
        message = str(outcome)
        assert message.startswith(adapter.message_prefixes), f"{where}: message {message!r}"
        messages.append(message)
        assert env.node_rows() == before, f"{where}: the node tables changed"
    for attempt in await make():
        before = env.node_rows()
        out = await env.attest_api(adapter.kind, attempt)
        where = f"{adapter.kind} [{attempt.label}] via AttestAgent"
        assert out.status in REFUSED_STATUSES, f"{where}: {out}"
        assert out.message, f"{where}: refused without a message"
        assert env.node_rows() == before, f"{where}: the node tables changed"
    assert not _error_records(caplog), f"{adapter.kind}: logged at ERROR: {_error_records(caplog)}"
    return messages


# ---- attempts the suite derives from a good one ---------------------------------------------


async def replayed_transcript(adapter: NodeAttestorAdapter, env: AttestEnv) -> Attempt:
    """A good attempt that the server admitted (through the attestor, or through AttestAgent
    for a first-use-only method), sent again as it was: the same payload and the same answers,
    now to fresh challenges."""
    good = await adapter.good(env)
    answers: list[bytes] = []

    async def recording(challenge: bytes) -> bytes:
        answers.append(await good.answer(challenge))
        return answers[-1]

    if adapter.first_use_only:
        admitted = await env.attest_api(adapter.kind, Attempt(good.payload, recording))
        assert admitted.status is None, f"{adapter.kind}: good attempt refused: {admitted}"
    else:
        first = await env.attest_direct(adapter.kind, Attempt(good.payload, recording))
        assert isinstance(first, AttestationResult), f"{adapter.kind}: refused: {first}"
    replies = iter(answers)

    async def replaying(challenge: bytes) -> bytes:
        return next(replies, b"")

    return Attempt(good.payload, replaying, "replayed transcript")


async def answer_to_another_challenge(adapter: NodeAttestorAdapter, env: AttestEnv) -> Attempt:
    """The agent's genuine answer to the challenge of an earlier, abandoned attempt."""
    good = await adapter.good(env)
    earlier: list[bytes] = []

    async def walk_away(challenge: bytes) -> bytes:
        earlier.append(challenge)
        raise Abandon

    outcome = await env.attest_direct(adapter.kind, Attempt(good.payload, walk_away))
    assert isinstance(outcome, Abandon) and earlier, f"{adapter.kind}: no challenge: {outcome}"

    async def answer_earlier(challenge: bytes) -> bytes:
        return await good.answer(earlier[0])

    return Attempt(good.payload, answer_earlier, "answer to another challenge")


def truncations(data: bytes) -> list[tuple[str, bytes]]:
    return [("first half", data[: len(data) // 2]), ("last byte cut", data[:-1])]


def oversizes(data: bytes) -> list[tuple[str, bytes]]:
    # JSON whitespace: the payload stays well-formed, only its size is wrong
    return [
        ("one byte over the limit", data + b" " * (MAX_ATTESTATION_MESSAGE + 1 - len(data))),
        ("four times the limit", data + b" " * (4 * MAX_ATTESTATION_MESSAGE)),
    ]


def _with_answer_edit(good: Attempt, label: str, edit: Callable[[bytes], bytes]) -> Attempt:
    async def edited(challenge: bytes) -> bytes:
        return edit(await good.answer(challenge))

    return Attempt(good.payload, edited, label)


# ---- the suite ------------------------------------------------------------------------------


class NodeAttestorConformance:
    """Behaviour every NodeAttestor must show. Subclasses provide the ``adapter`` fixture."""

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "hostile" in metafunc.fixturenames:
            metafunc.parametrize(
                "hostile", list(HOSTILE_PATH_VALUES.values()), ids=list(HOSTILE_PATH_VALUES)
            )

    async def test_good_attempt_is_admitted(self, adapter: NodeAttestorAdapter) -> None:
        async with in_process_env(adapter.server_plugins("good")) as env:
            result = await env.attest_direct(adapter.kind, await adapter.good(env))
            assert isinstance(result, AttestationResult), f"{adapter.kind}: refused: {result!r}"
            assert str(result.agent_id).startswith(
                f"spiffe://example.org/spire/agent/{adapter.kind}/"
            )
            out = await env.attest_api(adapter.kind, await adapter.good(env))
            assert out.status is None and out.agent_id, out
            stored = env.node_rows()["attested_node_entries"]
            assert any(out.agent_id in row for row in stored), stored

    async def test_replayed_transcript_is_refused(
        self, adapter: NodeAttestorAdapter, caplog: pytest.LogCaptureFixture
    ) -> None:
        _skip_unless_applies(adapter, "replay")
        async with in_process_env(adapter.server_plugins("replay")) as env:

            async def make() -> list[Attempt]:
                return [await replayed_transcript(adapter, env)]

            await expect_refused(adapter, env, make, caplog)

    async def test_answer_to_another_challenge_is_refused(
        self, adapter: NodeAttestorAdapter, caplog: pytest.LogCaptureFixture
    ) -> None:
        _skip_unless_applies(adapter, "challenge")
        async with in_process_env(adapter.server_plugins("challenge")) as env:

            async def make() -> list[Attempt]:
                return [await answer_to_another_challenge(adapter, env)]

            await expect_refused(adapter, env, make, caplog)

    async def test_truncated_and_oversize_payloads_are_refused(
        self, adapter: NodeAttestorAdapter, caplog: pytest.LogCaptureFixture
    ) -> None:
        async with in_process_env(adapter.server_plugins("payload")) as env:

            async def make() -> list[Attempt]:
                good = await adapter.good(env)
                edits = truncations(good.payload) + oversizes(good.payload)
                return [Attempt(data, good.answer, label) for label, data in edits]

            await expect_refused(adapter, env, make, caplog)

    async def test_truncated_and_oversize_answers_are_refused(
        self, adapter: NodeAttestorAdapter, caplog: pytest.LogCaptureFixture
    ) -> None:
        _skip_unless_applies(adapter, "challenge")
        async with in_process_env(adapter.server_plugins("answer")) as env:

            async def make() -> list[Attempt]:
                out = []
                for label, cut in (
                    ("answer: first half", lambda a: a[: len(a) // 2]),
                    ("answer: last byte cut", lambda a: a[:-1]),
                    ("answer: empty", lambda a: b""),
                    ("answer: one byte over the limit", lambda a: oversizes(a)[0][1]),
                ):
                    out.append(_with_answer_edit(await adapter.good(env), label, cut))
                return out

            await expect_refused(adapter, env, make, caplog)

    async def test_wrong_key_type_is_refused(
        self, adapter: NodeAttestorAdapter, caplog: pytest.LogCaptureFixture
    ) -> None:
        await self._bad_credential(adapter, "wrong_key_type", caplog)

    async def test_expired_credential_is_refused(
        self, adapter: NodeAttestorAdapter, caplog: pytest.LogCaptureFixture
    ) -> None:
        await self._bad_credential(adapter, "expired", caplog)

    async def test_not_yet_valid_credential_is_refused(
        self, adapter: NodeAttestorAdapter, caplog: pytest.LogCaptureFixture
    ) -> None:
        await self._bad_credential(adapter, "not_yet_valid", caplog)

    async def test_chain_to_untrusted_ca_is_refused(
        self, adapter: NodeAttestorAdapter, caplog: pytest.LogCaptureFixture
    ) -> None:
        await self._bad_credential(adapter, "untrusted_ca", caplog)

    async def test_hostile_agent_id_path_is_refused(
        self, adapter: NodeAttestorAdapter, hostile: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        _skip_unless_applies(adapter, "hostile_agent_path")
        async with in_process_env(adapter.server_plugins("hostile_agent_path")) as env:

            async def make() -> list[Attempt]:
                return await adapter.hostile_agent_path(env, hostile)

            await expect_refused(adapter, env, make, caplog)

    def test_replay_refused_through_server_process(self, adapter: NodeAttestorAdapter) -> None:
        """A good attestation through a real server process, then its transcript replayed:
        PERMISSION_DENIED naming the method, the node tables unchanged, no traceback logged."""
        _skip_unless_applies(adapter, "replay")
        with process_env(adapter.server_plugins("process")) as env:
            asyncio.run(_admit_then_replay(adapter, env))
            assert env.log_path is not None
            log = env.log_path.read_text(errors="replace")
            assert "Traceback" not in log and "internal error" not in log, log[-4000:]

    async def _bad_credential(
        self, adapter: NodeAttestorAdapter, case: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        _skip_unless_applies(adapter, case)
        async with in_process_env(adapter.server_plugins(case)) as env:

            async def make() -> list[Attempt]:
                attempts: list[Attempt] = await getattr(adapter, case)(env)
                return attempts

            await expect_refused(adapter, env, make, caplog)


async def _admit_then_replay(adapter: NodeAttestorAdapter, env: AttestEnv) -> None:
    good = await adapter.good(env)
    answers: list[bytes] = []

    async def recording(challenge: bytes) -> bytes:
        answers.append(await good.answer(challenge))
        return answers[-1]

    first = await env.attest_api(adapter.kind, Attempt(good.payload, recording))
    assert first.status is None and first.agent_id, first
    before = env.node_rows()
    assert any(first.agent_id in row for row in before["attested_node_entries"]), before
    replies = iter(answers)

    async def replaying(challenge: bytes) -> bytes:
        return next(replies, b"")

    again = await env.attest_api(adapter.kind, Attempt(good.payload, replaying))
    assert again.status == Status.PERMISSION_DENIED, again
    assert again.message.startswith(adapter.message_prefixes), again
    assert env.node_rows() == before
