"""Fixtures shared by every test folder.

SoftHSM2 reads ``SOFTHSM2_CONF`` once per process, so the session-scoped ``softhsm_dir`` must be
defined exactly once for the whole suite (here), not per folder: each pytest-xdist worker gets
one token directory, and every test gets a fresh token label in it (``softhsm_token``).
"""

from softhsm_token import softhsm_dir, softhsm_token  # noqa: F401
