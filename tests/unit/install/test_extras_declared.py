"""plastron/extras.py and pyproject.toml name the same extras, and each module an extra is said
to provide is installed by that extra's distributions (so a "needs the [hsm] extra" line sends
the user to the package that fixes it)."""

from __future__ import annotations

import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from plastron.extras import EXTRA_MODULES, MissingExtra, require_extra

ROOT = Path(__file__).resolve().parents[3]
NOT_ROLES = {"dev"}


def _optional_dependencies() -> dict[str, list[str]]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return dict(tomllib.load(f)["project"]["optional-dependencies"])


def _distribution(requirement: str) -> str:
    name = requirement.split(";", maxsplit=1)[0]
    for stop in "[<>=!~ ":
        name = name.split(stop, maxsplit=1)[0]
    return name.lower().replace("_", "-")


def test_extras_match_pyproject() -> None:
    declared = _optional_dependencies()
    assert set(EXTRA_MODULES) == set(declared) - NOT_ROLES


def test_each_extras_module_comes_from_that_extras_distributions() -> None:
    declared = _optional_dependencies()
    providers = packages_distributions()
    for extra, modules in EXTRA_MODULES.items():
        wanted = {_distribution(r) for r in declared[extra]}
        for module in modules:
            found = {d.lower().replace("_", "-") for d in providers.get(module, [])}
            assert found & wanted, (extra, module, found, wanted)


def test_no_base_dependency_is_an_extras_package() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        base = {_distribution(r) for r in tomllib.load(f)["project"]["dependencies"]}
    for extra, requirements in _optional_dependencies().items():
        if extra not in NOT_ROLES:
            assert base.isdisjoint(_distribution(r) for r in requirements), extra
    assert "grpcio" not in base  # nothing of ours imports grpc at run time


def test_an_installed_extra_passes_and_the_message_names_the_extra() -> None:
    require_extra("postgres", "anything")  # installed in the development venv
    error = MissingExtra('KeyManager "pkcs11"', "hsm")
    assert str(error) == "KeyManager \"pkcs11\" needs the [hsm] extra: pip install 'plastron[hsm]'"
