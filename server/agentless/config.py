"""``server { agentless_exchange { ... } }``: the HTTPS listener of the token exchange.

agentless_exchange {
    bind_address = "0.0.0.0"
    bind_port = 8443
    serving_cert_file { cert_file_path = "..." key_file_path = "..." }  # else the server SVID
    rate_limit_per_second = 5     # per caller address; 0 turns the limit off
    rate_limit_burst = 20
}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plastron.configs.block import Block
from plastron.configs.sections import PORT_RANGE


@dataclass(frozen=True)
class ExchangeServingCert:
    cert_file_path: Path
    key_file_path: Path


@dataclass(frozen=True)
class ExchangeListenerConfig:
    bind_address: str = "0.0.0.0"  # noqa: S104 - a public endpoint, like the server API
    bind_port: int = 8443
    serving_cert_file: ExchangeServingCert | None = None
    rate_limit_per_second: int = 5
    rate_limit_burst: int = 20


def read_exchange_listener(block: Block) -> ExchangeListenerConfig:
    d = ExchangeListenerConfig
    serving = None
    if block.has("serving_cert_file"):
        files = block.block("serving_cert_file")
        serving = ExchangeServingCert(
            Path(files.string("cert_file_path")), Path(files.string("key_file_path"))
        )
        files.finish()
    config = ExchangeListenerConfig(
        bind_address=block.string("bind_address", d.bind_address),
        bind_port=block.integer("bind_port", d.bind_port, *PORT_RANGE),
        serving_cert_file=serving,
        rate_limit_per_second=block.integer(
            "rate_limit_per_second", d.rate_limit_per_second, 0, 1_000_000
        ),
        rate_limit_burst=block.integer("rate_limit_burst", d.rate_limit_burst, 1, 1_000_000),
    )
    block.finish()
    return config
