"""Protocol limits that more than one end enforces, stated once.

A request that one end accepts and the next refuses fails far from its cause (a workload asking
the agent for 40 JWT audiences would pass the Workload API and fail at the server), so the
agent's Workload API, the server API and the server CA all check with the same function.
"""

from __future__ import annotations

from collections.abc import Sequence

from plastron.errors import InvalidArgument

# A JWT-SVID request (Workload API FetchJWTSVID, server NewJWTSVID and MintJWTSVID, the CA).
MAX_JWT_AUDIENCES = 32
MAX_JWT_AUDIENCE_CHARS = 1024
# A JWT-SVID being parsed or validated may carry more (another issuer's token): a DoS bound only.
MAX_JWT_TOKEN_AUDIENCES = 64


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
