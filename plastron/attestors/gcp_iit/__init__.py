"""The ``gcp_iit`` attestation method (SPIRE's): a Compute Engine instance proves itself with
the instance identity token Google signs for it, verified offline against Google's JWKS.

- :mod:`.token`: :func:`verify`, the library function (also for checking a token by hand);
- :mod:`.config`: both halves' ``plugin_data`` (SPIRE's keys) and the agent ID template;
- :mod:`.compute`: the optional Compute Engine API look-up (tags, labels, metadata);
- :mod:`.server`, :mod:`.agent`: the two halves; :mod:`.plugin`: registration.
"""

from plastron.attestors.gcp_iit.token import IdentityToken, verify

__all__ = ["IdentityToken", "verify"]
