"""Configuration of the server CA (SPIRE's ca_* / *_ttl / jwt_* server keys)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import NameOID

from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError
from plastron.keymanager import KeyType
from plastron.server.config import ServerConfig
from plastron.spiffe.ids import TrustDomain

DEFAULT_CA_SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE"),
    ]
)


@dataclass(frozen=True)
class CAConfig:
    trust_domain: TrustDomain
    ca_key_type: KeyType = KeyType.EC_P256
    jwt_key_type: KeyType | None = None  # None: same as ca_key_type, as in SPIRE
    ca_ttl: dt.timedelta = dt.timedelta(hours=24)
    default_x509_svid_ttl: dt.timedelta = dt.timedelta(hours=1)
    default_jwt_svid_ttl: dt.timedelta = dt.timedelta(minutes=5)
    agent_ttl: dt.timedelta | None = None  # None: default_x509_svid_ttl
    ca_subject: x509.Name | None = None  # None: C=US, O=SPIFFE
    jwt_issuer: str | None = None
    signing_workers: int = field(default=4)  # executor size for blocking KeyManagers
    # Processes that check batch CSRs (and sign, with an HSM); None: by the machine's cores.
    worker_processes: int | None = None
    key_manager_plugin: str = ""  # its name, for the metrics

    def __post_init__(self) -> None:
        for name in ("ca_ttl", "default_x509_svid_ttl", "default_jwt_svid_ttl", "agent_ttl"):
            value = getattr(self, name)
            if value is not None and value <= dt.timedelta(0):
                raise ConfigError(f"{name} must be positive, got {value}")
        if self.ca_ttl < dt.timedelta(minutes=1):
            raise ConfigError(f"ca_ttl must be at least 1m, got {self.ca_ttl}")
        if not 1 <= self.signing_workers <= 64:
            raise ConfigError(f"signing_workers must be 1..64, got {self.signing_workers}")
        if self.worker_processes is not None and not 0 <= self.worker_processes <= 64:
            raise ConfigError(f"worker_processes must be 0..64, got {self.worker_processes}")
        if self.jwt_issuer is not None and not self.jwt_issuer:
            raise ConfigError("jwt_issuer must not be empty when set")

    @property
    def guaranteed_svid_ttl(self) -> dt.timedelta:
        """The longest TTL every SVID gets in full, whatever the rotation phase (SPIRE)."""
        return min(self.ca_ttl / 6, dt.timedelta(days=7))

    def ttl_warnings(self) -> list[str]:
        """SPIRE's start-up warnings: default TTLs the CA cannot always honour in full."""
        limit = self.guaranteed_svid_ttl
        out = []
        for name in ("default_x509_svid_ttl", "default_jwt_svid_ttl", "agent_ttl"):
            value = getattr(self, name)
            if value is not None and value > limit:
                out.append(
                    f"{name} ({value}) is too high for ca_ttl ({self.ca_ttl}): SVIDs with shorter "
                    f"lifetimes may be issued; set {name} to {limit} or less"
                )
        return out

    @property
    def effective_jwt_key_type(self) -> KeyType:
        return self.jwt_key_type or self.ca_key_type

    @property
    def effective_agent_ttl(self) -> dt.timedelta:
        return self.agent_ttl or self.default_x509_svid_ttl

    @property
    def effective_ca_subject(self) -> x509.Name:
        return self.ca_subject or DEFAULT_CA_SUBJECT


def ca_config(cfg: ServerConfig, worker_processes: int | None = None) -> CAConfig:
    """The CA's settings from the server config; pure, so ``validate`` builds it too."""
    subject = None
    s = cfg.ca_subject
    if s.country or s.organization or s.common_name:
        attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, c) for c in s.country]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in s.organization]
        if s.common_name:
            attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, s.common_name))
        subject = x509.Name(attrs)
    return CAConfig(
        trust_domain=cfg.trust_domain,
        ca_key_type=cfg.ca_key_type,
        jwt_key_type=cfg.jwt_key_type,
        ca_ttl=cfg.ca_ttl,
        default_x509_svid_ttl=cfg.default_x509_svid_ttl,
        default_jwt_svid_ttl=cfg.default_jwt_svid_ttl,
        agent_ttl=cfg.agent_ttl,
        ca_subject=subject,
        jwt_issuer=cfg.jwt_issuer or None,
        worker_processes=worker_processes,
        key_manager_plugin=(cfg.key_manager or PluginConfig("KeyManager", "disk")).name,
    )
