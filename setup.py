"""Package discovery for the folder-per-room layout (docs/architecture.md, "Rooms").

The import names are plastron.* only; server/, agent/, hsm/, tpm/ and oidc/ are mapped under
plastron through package_dir (declared in pyproject.toml), and every sub-package of each
room is found here so a new sub-folder needs no edit to the packaging.
"""

from setuptools import find_packages, setup

ROOTS = {
    "plastron": "plastron",
    "plastron.server": "server",
    "plastron.agent": "agent",
    "plastron.hsm": "hsm",
    "plastron.tpm": "tpm",
    "plastron.oidc": "oidc",
}

packages: list[str] = []
for name, folder in ROOTS.items():
    packages.append(name)
    for sub in find_packages(folder):
        full = f"{name}.{sub}"
        if full not in ROOTS:
            packages.append(full)

setup(packages=packages, package_dir=dict(ROOTS))
