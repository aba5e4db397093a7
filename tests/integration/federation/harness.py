"""Plastron servers with a bundle endpoint, as real processes, for the federation tests."""

from __future__ import annotations

from pathlib import Path

from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import TrustDomain
from tests.integration.agent.agent_processes import ServerProcess
from tests.processes import free_port


def endpoint_block(port: int, extra: str = "") -> str:
    return f"""
  federation {{
    bundle_endpoint {{
      address = "127.0.0.1"
      port = {port}
      refresh_hint = "1m"
      profile "https_spiffe" {{}}
    }}
    {extra}
  }}"""


def federates_with(td: str, port: int) -> str:
    return f"""
    federates_with "{td}" {{
      bundle_endpoint_url = "https://127.0.0.1:{port}"
      bundle_endpoint_profile "https_spiffe" {{
        endpoint_spiffe_id = "spiffe://{td}/spire/server"
      }}
    }}"""


class FederatingServer(ServerProcess):
    """A server of trust domain ``td`` serving its bundle on ``endpoint_port``."""

    def __init__(
        self, base: Path, td: str, *, settings: str = "", federation: str = "", port: int = 0
    ) -> None:
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)
        self.endpoint_port = port or free_port()
        block = endpoint_block(self.endpoint_port, federation)
        super().__init__(base, settings + block, td=td)

    @property
    def endpoint_url(self) -> str:
        return f"https://127.0.0.1:{self.endpoint_port}"

    def bundle(self) -> Bundle:
        text = self.cli("bundle", "show", "-format", "spiffe").stdout
        return Bundle.from_jwks(TrustDomain(self.td), text.encode())
