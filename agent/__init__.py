"""Plastron agent package (installed as plastron.agent)."""
