"""The swtpm fixtures (a manufactured TPM state and its manufacturer CA), for the attestation
payloads of the tpm and tpm_devid methods."""

from __future__ import annotations

from swtpm_fixtures import manufacturer_ca, swtpm_template

__all__ = ["manufacturer_ca", "swtpm_template"]
