"""Plastron: a SPIFFE workload identity control plane with hardware roots of trust."""

__version__ = "0.1.0"
