"""Plastron hsm package (installed as plastron.hsm)."""
