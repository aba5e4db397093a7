"""Workload API response messages built from the cache's WorkloadUpdate."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2

from plastron.agent.cache import Identity, WorkloadUpdate
from plastron.proto.workload import workload_pb2 as pb
from plastron.spiffe.bundle import JWT_SVID_USE, Bundle
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.jwk import public_key_to_jwk


def unique_hints(identities: tuple[Identity, ...]) -> list[Identity]:
    """Drop later identities repeating a non-empty hint: hints are unique per response."""
    seen: set[str] = set()
    out: list[Identity] = []
    for ident in identities:
        hint = ident.entry.hint
        if hint and hint in seen:
            continue
        seen.add(hint)
        out.append(ident)
    return out


def all_bundles(update: WorkloadUpdate) -> dict[TrustDomain, Bundle]:
    bundles: dict[TrustDomain, Bundle] = dict(update.federated_bundles)
    if update.bundle is not None:
        bundles[update.bundle.trust_domain] = update.bundle
    return bundles


def x509_svid_response(update: WorkloadUpdate) -> pb.X509SVIDResponse:
    own = update.bundle.x509_der() if update.bundle is not None else b""
    msg = pb.X509SVIDResponse()
    for ident in unique_hints(update.identities):
        msg.svids.append(
            pb.X509SVID(
                spiffe_id=str(ident.svid.spiffe_id),
                x509_svid=ident.svid.chain_der(),
                x509_svid_key=ident.svid.key_pkcs8_der(),
                bundle=own,
                hint=ident.entry.hint,
            )
        )
    for td, bundle in update.federated_bundles.items():
        msg.federated_bundles[str(td.id)] = bundle.x509_der()
    return msg


def x509_bundles_response(update: WorkloadUpdate) -> pb.X509BundlesResponse:
    msg = pb.X509BundlesResponse()
    for td, bundle in all_bundles(update).items():
        msg.bundles[str(td.id)] = bundle.x509_der()
    return msg


def jwt_jwks(bundle: Bundle) -> bytes:
    """A standard JWKS of the bundle's JWT authorities only, as SPIRE serves JWT bundles."""
    keys: list[dict[str, Any]] = []
    for authority in bundle.jwt_authorities:
        jwk = public_key_to_jwk(authority.public_key)
        jwk["kid"] = authority.key_id
        jwk["use"] = JWT_SVID_USE
        keys.append(jwk)
    return json.dumps({"keys": keys}).encode()


def jwt_bundles_response(update: WorkloadUpdate) -> pb.JWTBundlesResponse:
    msg = pb.JWTBundlesResponse()
    for td, bundle in all_bundles(update).items():
        msg.bundles[str(td.id)] = jwt_jwks(bundle)
    return msg


def claims_struct(claims: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(dict(claims))
    return out
