"""What every bad-input (fuzz) test shares: the per-boundary counts, the rule for a clean
rejection, the Hypothesis settings and the input strategies.

A test feeds each generated input to one boundary through :func:`check` (a call),
:func:`acheck` (a coroutine) or :func:`check_status` (a gRPC outcome). Each counts the input as
tried, and as rejected or accepted. A rejection must be clean: a PlastronError whose gRPC code
is not INTERNAL (or, over gRPC, any status but INTERNAL and UNKNOWN). Anything else propagates
and fails the test with the input that caused it.

The counts are printed at the end of the run (tests/conftest.py), summed over xdist workers.
``PLASTRON_FUZZ_SCALE`` multiplies every test's example budget (default 1: the CI budget).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from grpclib.const import Status
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from plastron.errors import PlastronError
from plastron.transport.grpc_status import status_for

T = TypeVar("T")
# boundary -> [tried, rejected, accepted]
COUNTS: dict[str, list[int]] = {}
UNCLEAN_STATUSES = frozenset({Status.INTERNAL, Status.UNKNOWN})
SCALE = float(os.environ.get("PLASTRON_FUZZ_SCALE", "1"))


def fuzz_settings(max_examples: int) -> settings:
    """Bounded settings: the whole fuzz suite must stay well under a minute of CI."""
    return settings(
        max_examples=max(1, int(max_examples * SCALE)),
        deadline=None,  # a loaded CI machine is slow; the budget is the example count
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )


# ---- counting -------------------------------------------------------------------------------


def record(boundary: str, accepted: bool) -> None:
    row = COUNTS.setdefault(boundary, [0, 0, 0])
    row[0] += 1
    row[1 if not accepted else 2] += 1


def merge(counts: Mapping[str, Sequence[int]]) -> None:
    for boundary, (tried, rejected, accepted) in counts.items():
        row = COUNTS.setdefault(boundary, [0, 0, 0])
        row[0] += tried
        row[1] += rejected
        row[2] += accepted


def table() -> list[str]:
    if not COUNTS:
        return []
    width = max(len(b) for b in COUNTS)
    lines = [f"{'boundary':<{width}}  {'tried':>7}  {'rejected':>8}  {'accepted':>8}"]
    for boundary in sorted(COUNTS):
        tried, rejected, accepted = COUNTS[boundary]
        lines.append(f"{boundary:<{width}}  {tried:>7}  {rejected:>8}  {accepted:>8}")
    total = [sum(row[i] for row in COUNTS.values()) for i in range(3)]
    lines.append(f"{'total':<{width}}  {total[0]:>7}  {total[1]:>8}  {total[2]:>8}")
    return lines


# ---- the rule -------------------------------------------------------------------------------


def _assert_clean(boundary: str, exc: PlastronError) -> None:
    status = status_for(exc)
    assert status not in UNCLEAN_STATUSES, (
        f"{boundary}: {type(exc).__name__} ({status.name}) is not a clean rejection: {exc}"
    )


def check(boundary: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``fn(*args)``: its result (accepted), or None after a clean PlastronError (rejected)."""
    try:
        result = fn(*args, **kwargs)
    except PlastronError as exc:
        _assert_clean(boundary, exc)
        record(boundary, accepted=False)
        return None
    record(boundary, accepted=True)
    return result


async def acheck(boundary: str, call: Awaitable[T]) -> T | None:
    """As :func:`check`, for a coroutine."""
    try:
        result = await call
    except PlastronError as exc:
        _assert_clean(boundary, exc)
        record(boundary, accepted=False)
        return None
    record(boundary, accepted=True)
    return result


def check_status(boundary: str, status: Status | None, message: str = "") -> bool:
    """A gRPC call's outcome (None: OK); True when accepted."""
    assert status not in UNCLEAN_STATUSES, f"{boundary}: {status} {message!r}"
    if status is not None and status != Status.OK:
        assert message, f"{boundary}: {status.name} without a message"
    accepted = status is None or status == Status.OK
    record(boundary, accepted=accepted)
    return accepted


# ---- strategies -----------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=15,
)
b64_text = st.binary(max_size=96).map(lambda b: base64.b64encode(b).decode())
# Deep nesting: the input that made a recursive parser raise RecursionError.
deep_json = st.integers(min_value=200, max_value=20_000).flatmap(
    lambda depth: st.sampled_from(
        [b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth]
    )
)


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes]) -> bytes:
    """A valid input with a few random edits: bit flips, cuts, insertions, duplications."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete", "duplicate"]))
        at = draw(st.integers(min_value=0, max_value=max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(min_value=1, max_value=16))]
        elif op == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(min_value=1, max_value=64))]
    return bytes(data)


@st.composite
def json_objects_like(draw: st.DrawFn, template: Mapping[str, Any]) -> bytes:
    """A JSON object shaped like ``template``: its keys (some dropped, some foreign) with
    values that are sometimes the template's, sometimes of another type."""
    obj: dict[str, Any] = {}
    for key, value in template.items():
        choice = draw(st.integers(min_value=0, max_value=3))
        if choice == 0:
            continue
        obj[key] = value if choice == 1 else draw(json_values | b64_text)
    for key in draw(st.lists(st.text(max_size=10), max_size=2)):
        obj[key] = draw(json_values)
    return json.dumps(obj).encode()


def any_bytes_for(seeds: Sequence[bytes], template: Mapping[str, Any] | None = None) -> Any:
    """Random bytes, mutated seeds, deep nesting, and (with a template) JSON of its shape."""
    options = st.sampled_from(seeds) | st.binary(max_size=512) | mutated(seeds) | deep_json
    if template is not None:
        options = options | json_objects_like(template)
    return options


# ---- reporting (hooked up in tests/conftest.py) -------------------------------------------


class XdistCounts:
    """Under pytest-xdist each worker counts its own inputs; the controller adds them up."""

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        merge(getattr(node, "workeroutput", {}).get("fuzz_counts", {}))


def session_finished(config: Any) -> None:
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand the counts to the controller
        workeroutput["fuzz_counts"] = {k: list(v) for k, v in COUNTS.items()}


def write_summary(terminalreporter: Any) -> None:
    lines = table()
    if lines:
        terminalreporter.write_sep("-", "bad-input suite: inputs per boundary")
        for line in lines:
            terminalreporter.write_line(line)
