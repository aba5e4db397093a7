"""The ``azure_msi`` attestation method (SPIRE's): an Azure VM proves itself with an access token
its managed identity gets from the Instance Metadata Service, verified offline against the
Microsoft Entra signing keys.

- :mod:`.token`: :func:`verify`, the library function (also for checking a token by hand);
- :mod:`.config`: both halves' ``plugin_data`` (SPIRE's keys) and the agent ID template;
- :mod:`.arm`: the Azure Resource Manager look-ups behind the selectors;
- :mod:`.server`, :mod:`.agent`: the two halves; :mod:`.plugin`: registration.
"""

from plastron.attestors.azure_msi.token import MsiToken, verify

__all__ = ["MsiToken", "verify"]
