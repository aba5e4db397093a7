"""Protocol limits, stated once and checked alike at every end.

A request that one end accepts and the next refuses fails far from its cause (a workload asking
the agent for 40 JWT audiences would pass the Workload API and fail at the server; an entry
whose TTL the CA refuses would be stored, then fail at every signing), so the agent, the server
API, the CLI and the CA all check with the constants and functions here.
"""

from __future__ import annotations

from collections.abc import Sequence

from plastron.errors import InvalidArgument

# A JWT-SVID request (Workload API FetchJWTSVID, server NewJWTSVID and MintJWTSVID, the CA).
MAX_JWT_AUDIENCES = 32
MAX_JWT_AUDIENCE_CHARS = 1024
# A JWT-SVID being parsed or validated may carry more (another issuer's token): a DoS bound only.
MAX_JWT_TOKEN_AUDIENCES = 64

# The DNS names of one X509-SVID: an entry's dns_names, a MintX509SVID CSR's DNS SANs.
MAX_DNS_NAMES = 100
MAX_DNS_NAME_CHARS = 253

# A requested SVID lifetime in seconds (entry TTLs, Mint* ttl): far beyond any CA lifetime, a
# bound on caller input only; the CA caps every SVID at its own expiry.
MAX_TTL_SECONDS = 3650 * 24 * 3600

# List calls (ListEntries, ListAgents, ListFederatedBundles...).
MAX_PAGE_SIZE = 10_000

# One registration entry.
MAX_ENTRY_SELECTORS = 128
MAX_FEDERATES_WITH = 128
MAX_HINT_CHARS = 1024
MAX_ENTRY_ID_CHARS = 255

# Items of one batch call: BatchNewX509SVID (SPIRE's per-call batch, which agents split by),
# and the entry and bundle Batch* calls.
MAX_X509_SVID_BATCH = 500
MAX_BATCH = 1000


def check_jwt_audience(audience: Sequence[str]) -> tuple[str, ...]:
    """The audience of a JWT-SVID request in order without repeats, or InvalidArgument: 1 to
    ``MAX_JWT_AUDIENCES`` distinct values of 1 to ``MAX_JWT_AUDIENCE_CHARS`` characters."""
    if isinstance(audience, str):
        raise InvalidArgument("audience must be a list of strings, not a string")
    if not audience:
        raise InvalidArgument("audience must be specified")
    # counted as sent, repeats included: the bound is on the request, whatever it holds
    if len(audience) > MAX_JWT_AUDIENCES:
        raise InvalidArgument(
            f"audience: {len(audience)} values; at most {MAX_JWT_AUDIENCES} are allowed"
        )
    values = tuple(dict.fromkeys(audience))
    for value in values:
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_JWT_AUDIENCE_CHARS:
            shown = repr(value)[:64]
            raise InvalidArgument(
                f"audience: value {shown} must be 1..{MAX_JWT_AUDIENCE_CHARS} characters"
            )
    return values


def check_dns_names(names: Sequence[str]) -> tuple[str, ...]:
    """At most ``MAX_DNS_NAMES`` names of 1 to ``MAX_DNS_NAME_CHARS`` ASCII characters without
    whitespace (a DNS SAN is an IA5String; IDNs arrive as A-labels)."""
    if isinstance(names, str):
        raise InvalidArgument("dns_names must be a sequence of names, not a string")
    if len(names) > MAX_DNS_NAMES:
        raise InvalidArgument(f"{len(names)} DNS names exceed the limit of {MAX_DNS_NAMES}")
    for name in names:
        if not isinstance(name, str) or not name or len(name) > MAX_DNS_NAME_CHARS:
            raise InvalidArgument(f"DNS name {name!r} must be 1..{MAX_DNS_NAME_CHARS} characters")
        if not name.isascii() or any(c.isspace() for c in name):
            raise InvalidArgument(f"DNS name {name!r} must be ASCII without whitespace")
    return tuple(names)


def check_ttl(seconds: int, field: str = "ttl") -> int:
    """A requested lifetime: an integer of 0 (the default) to ``MAX_TTL_SECONDS`` seconds."""
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise InvalidArgument(f"{field}: must be an integer number of seconds, got {seconds!r}")
    if seconds < 0:
        raise InvalidArgument(f"{field}: must not be negative, got {seconds}")
    if seconds > MAX_TTL_SECONDS:
        raise InvalidArgument(f"{field}: {seconds}s exceeds the limit of {MAX_TTL_SECONDS}s")
    return seconds


def check_page_size(page_size: int) -> int:
    """A list call's page size: 0 (the server's choice) to ``MAX_PAGE_SIZE``."""
    if page_size < 0:
        raise InvalidArgument("page_size: must not be negative")
    if page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size: {page_size} exceeds the maximum of {MAX_PAGE_SIZE}")
    return page_size
