"""Small builders for datastore tests."""

from __future__ import annotations

from typing import Any

from plastron.records import AttestedNode, RegistrationEntry
from plastron.selector import Selector
from plastron.spiffe.ids import SpiffeId, TrustDomain

TD = TrustDomain("example.org")
SERVER = SpiffeId(TD, "/spire/server")


def sel(text: str) -> Selector:
    return Selector.parse(text)


def sid(path: str) -> SpiffeId:
    return SpiffeId(TD, path)


def entry(
    path: str, *selectors: str, parent: str = "/spire/server", **kw: Any
) -> RegistrationEntry:
    return RegistrationEntry(
        entry_id=kw.pop("entry_id", ""),
        spiffe_id=sid(path),
        parent_id=sid(parent),
        selectors=tuple(sel(s) for s in selectors),
        **kw,
    )


def node(name: str, *selectors: str, **kw: Any) -> AttestedNode:
    fields: dict[str, Any] = {
        "attestation_type": "join_token",
        "cert_serial": f"serial-{name}",
        "cert_not_after": 2_000_000_000,
    }
    fields.update(kw)
    return AttestedNode(
        spiffe_id=sid(f"/spire/agent/join_token/{name}"),
        selectors=tuple(sel(s) for s in selectors),
        **fields,
    )
