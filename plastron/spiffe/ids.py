"""SPIFFE IDs and trust domain names, parsed strictly per the SPIFFE ID spec.

Nothing is normalised: input that is not already canonical is rejected with a message
naming the rule it broke (one rule per message, in the spirit of go-spiffe's spiffeid).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import lru_cache

from plastron.errors import InvalidSpiffeId

SCHEME = "spiffe://"
MAX_ID_BYTES = 2048
MAX_TRUST_DOMAIN_BYTES = 255

_TD_CHARS = frozenset(string.ascii_lowercase + string.digits + ".-_")
_PATH_CHARS = frozenset(string.ascii_letters + string.digits + ".-_")
# The shape almost every ID has: checked in one pass, then built without checking again. Dot
# segments and anything else go through the rule-by-rule checks below, which name the rule.
_CANONICAL = re.compile(r"spiffe://([a-z0-9._-]{1,255})((?:/[A-Za-z0-9._-]+)*)")


def _check_trust_domain(name: str, whole: str) -> None:
    if not name:
        raise InvalidSpiffeId(f"trust domain is missing (in {whole!r})")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_TRUST_DOMAIN_BYTES:
        raise InvalidSpiffeId(f"trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes")
    for ch in name:
        if ch not in _TD_CHARS:
            if ch == ":":
                raise InvalidSpiffeId(f"trust domain must not carry a port (in {whole!r})")
            if ch == "@":
                raise InvalidSpiffeId(f"trust domain must not carry userinfo (in {whole!r})")
            if ch.isupper():
                raise InvalidSpiffeId(
                    f"trust domain characters are limited to lowercase letters, numbers, dots, "
                    f"dashes, and underscores (uppercase {ch!r} in {whole!r})"
                )
            raise InvalidSpiffeId(
                f"trust domain characters are limited to lowercase letters, numbers, dots, "
                f"dashes, and underscores ({ch!r} in {whole!r})"
            )


def _check_path(path: str, whole: str) -> None:
    """A path is empty, or "/" followed by segments of [A-Za-z0-9._-], none empty, "." or ".."."""
    if not path:
        return
    if not path.startswith("/"):
        raise InvalidSpiffeId(f"path must start with '/' (in {whole!r})")
    if path.endswith("/"):
        raise InvalidSpiffeId(f"path cannot have a trailing slash (in {whole!r})")
    for segment in path[1:].split("/"):
        if segment == "":
            raise InvalidSpiffeId(f"path cannot contain empty segments (in {whole!r})")
        if segment in (".", ".."):
            raise InvalidSpiffeId(f"path cannot contain dot segments (in {whole!r})")
        for ch in segment:
            if ch not in _PATH_CHARS:
                if ch == "%":
                    raise InvalidSpiffeId(
                        f"path cannot contain percent-encoded characters (in {whole!r})"
                    )
                if ch in "?#":
                    raise InvalidSpiffeId(f"SPIFFE ID cannot have a query or fragment ({whole!r})")
                raise InvalidSpiffeId(
                    f"path segment characters are limited to letters, numbers, dots, dashes, "
                    f"and underscores ({ch!r} in {whole!r})"
                )


@dataclass(frozen=True, order=True, slots=True)
class TrustDomain:
    """A trust domain name such as ``example.org`` (no scheme)."""

    name: str

    def __post_init__(self) -> None:
        _check_trust_domain(self.name, self.name)

    @classmethod
    def parse(cls, text: str) -> TrustDomain:
        """Accept a bare name (``example.org``) or a trust-domain ID (``spiffe://example.org``)."""
        if not isinstance(text, str):
            raise InvalidSpiffeId("trust domain must be a string")
        if "://" in text:
            sid = SpiffeId.parse(text)
            if sid.path:
                raise InvalidSpiffeId(f"a trust domain ID has no path ({text!r})")
            return sid.trust_domain
        return cls(text)

    @property
    def id(self) -> SpiffeId:
        """The trust domain's own SPIFFE ID, ``spiffe://<name>``."""
        return SpiffeId(self, "")

    def spiffe_id(self, path: str) -> SpiffeId:
        return SpiffeId(self, path)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, order=True, slots=True)
class SpiffeId:
    """A SPIFFE ID: a trust domain and a path (empty, or ``/seg/seg``)."""

    trust_domain: TrustDomain
    path: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.trust_domain, TrustDomain):
            raise InvalidSpiffeId("trust_domain must be a TrustDomain")
        _check_path(self.path, f"{SCHEME}{self.trust_domain.name}{self.path}")
        if len(str(self).encode()) > MAX_ID_BYTES:
            raise InvalidSpiffeId(f"SPIFFE ID is longer than {MAX_ID_BYTES} bytes")

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        if isinstance(text, str) and len(text) <= MAX_ID_BYTES:
            canonical = _CANONICAL.fullmatch(text)
            if canonical is not None and "/." not in text:
                return _unchecked(_trust_domain(canonical[1]), canonical[2])
        return cls._parse_checked(text)

    @classmethod
    def _parse_checked(cls, text: str) -> SpiffeId:
        if not isinstance(text, str):
            raise InvalidSpiffeId("SPIFFE ID must be a string")
        if not text:
            raise InvalidSpiffeId("SPIFFE ID is empty")
        if len(text.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            raise InvalidSpiffeId(f"SPIFFE ID is longer than {MAX_ID_BYTES} bytes")
        if not text.startswith(SCHEME):
            if text.lower().startswith(SCHEME):
                raise InvalidSpiffeId(f"scheme must be lowercase 'spiffe' ({text!r})")
            raise InvalidSpiffeId(f"scheme is missing or invalid; must be 'spiffe://' ({text!r})")
        rest = text[len(SCHEME) :]
        slash = rest.find("/")
        td_part, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        for mark in ("?", "#"):
            if mark in td_part:
                raise InvalidSpiffeId(f"SPIFFE ID cannot have a query or fragment ({text!r})")
        _check_trust_domain(td_part, text)
        _check_path(path, text)
        return cls(TrustDomain(td_part), path)

    @classmethod
    def from_parts(cls, trust_domain: TrustDomain | str, path: str) -> SpiffeId:
        """Build from ``{trust_domain, path}`` as SPIRE's API carries them."""
        td = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain(trust_domain)
        return cls(td, path)

    def member_of(self, td: TrustDomain) -> bool:
        return self.trust_domain == td

    def is_reserved(self) -> bool:
        """True for IDs under the reserved ``/spire/`` namespace (agents, server)."""
        return self.path == "/spire" or self.path.startswith("/spire/")

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain.name}{self.path}"


@lru_cache(maxsize=1024)
def _trust_domain(name: str) -> TrustDomain:
    return TrustDomain(name)


def _unchecked(td: TrustDomain, path: str) -> SpiffeId:
    """A SpiffeId from parts already known valid (the canonical pattern matched)."""
    sid = object.__new__(SpiffeId)
    object.__setattr__(sid, "trust_domain", td)
    object.__setattr__(sid, "path", path)
    return sid


def server_id(td: TrustDomain) -> SpiffeId:
    """The server's SPIFFE ID, ``spiffe://<td>/spire/server``."""
    return SpiffeId(td, "/spire/server")


def agent_id(td: TrustDomain, method: str, suffix: str) -> SpiffeId:
    """An agent ID, ``spiffe://<td>/spire/agent/<method>/<suffix>`` (suffix may hold '/')."""
    return SpiffeId(td, f"/spire/agent/{method}/{suffix}")
