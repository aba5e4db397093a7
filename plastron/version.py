"""The installed package's version, as ``plastron-server --version`` and ``plastron-agent
--version`` report it: read from the distribution's metadata, so it is the version pip
installed (pyproject.toml takes it from ``plastron.__version__`` at build time)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import plastron

DISTRIBUTION = "plastron"
VERSION_FLAGS = ("--version", "-version")


def package_version() -> str:
    """The installed distribution's version; the source tree's when it is not installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return plastron.__version__
