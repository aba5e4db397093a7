"""Plastron tpm package (installed as plastron.tpm)."""
