"""Workload API stream responses, encoded once per distinct state and shared by its callers.

Most of a node's callers are entitled to the same identities as many others (one service's
processes share a uid, so a selector set): each built the same response message from the
cache, serialized it to tell whether it differed from the last one sent, and grpclib
serialized it again to send it. Now the bytes of a state are built once, kept for the next
caller in the same state, and sent as they are (plastron.transport.codec.Encoded).

A state is known by the very objects its response is built from (each identity's entry and
SVID object, the bundles), and the memo keeps that state alive while it holds its bytes, so
an object's ``id`` in a key cannot be reused by another while the key is there: a new SVID
(a rotation), a changed entry or bundle is a new key, never a stale hit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

from google.protobuf.message import Message

from plastron.agent.cache import WorkloadUpdate

# Distinct states kept: one per distinct identity set on the node, for each streaming method.
DEFAULT_STATES = 256


def state_key(update: WorkloadUpdate) -> tuple[Hashable, ...]:
    """What the response for ``update`` is built from, by object identity (see module doc)."""
    identities = tuple((ident.entry, id(ident.svid)) for ident in update.identities)
    federated = tuple((td, id(bundle)) for td, bundle in update.federated_bundles.items())
    return identities, id(update.bundle), federated, update.bundle_versions


class ResponseMemo:
    """The wire form of recent states' responses, by method and state (LRU)."""

    def __init__(self, states: int = DEFAULT_STATES) -> None:
        self._states = states
        self._encoded: OrderedDict[tuple[str, Hashable], tuple[WorkloadUpdate, bytes]] = (
            OrderedDict()
        )
        self.builds = 0
        """Responses built and serialized (the others were shared)."""

    def encoded(
        self, method: str, update: WorkloadUpdate, build: Callable[[WorkloadUpdate], Message | None]
    ) -> bytes | None:
        """``build(update)`` serialized (deterministically), or None when it builds nothing."""
        key = (method, state_key(update))
        hit = self._encoded.get(key)
        if hit is not None:
            self._encoded.move_to_end(key)
            return hit[1]
        msg = build(update)
        self.builds += 1
        if msg is None:
            return None
        data = msg.SerializeToString(deterministic=True)
        # The update is kept with the bytes: it holds the objects whose ids are in the key.
        self._encoded[key] = (update, data)
        while len(self._encoded) > self._states:
            self._encoded.popitem(last=False)
        return data

    def __len__(self) -> int:
        return len(self._encoded)
