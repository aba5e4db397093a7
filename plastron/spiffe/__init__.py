"""SPIFFE standard types: IDs, trust domains, SVIDs and bundles."""

from plastron.spiffe.ids import SpiffeId, TrustDomain

__all__ = ["SpiffeId", "TrustDomain"]
