"""Plastron server runtime (installed as plastron.server)."""
