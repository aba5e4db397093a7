"""A fake AWS STS on loopback answering ``GetCallerIdentity`` as the real one does: it verifies
the request's SigV4 signature with the test credentials it issued (botocore's signer recomputes
it over exactly the signed headers, at the request's own X-Amz-Date), refuses a request signed
for another host, with a wrong session token or more than 15 minutes from now, and answers the
caller's identity in STS's XML."""

from __future__ import annotations

import datetime as dt
import hmac
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any
from unittest import mock

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from plastron.attestors.aws_iam.agent import sign_request
from plastron.attestors.aws_iam.config import AwsIamAgentConfig
from tests.cloud.fake_http import FakeHttp, Reply, Seen

ACCOUNT = "123456789012"
NS = "https://sts.amazonaws.com/doc/2011-06-15/"
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/sts/"
    r"aws4_request, SignedHeaders=(?P<signed>[^,]+), Signature=(?P<sig>[0-9a-f]{64})"
)


@dataclass(frozen=True)
class Identity:
    access_key: str
    secret_key: str
    token: str
    arn: str
    user_id: str
    account: str = ACCOUNT

    def credentials(self) -> Credentials:
        return Credentials(self.access_key, self.secret_key, self.token)


def task_role(n: int, role: str = "payments-task", account: str = ACCOUNT) -> Identity:
    return Identity(
        access_key=f"ASIATESTKEY{n:09d}", secret_key=f"secret-{n}", token=f"session-token-{n}",
        arn=f"arn:aws:sts::{account}:assumed-role/{role}/task-{n}",
        user_id=f"AROATESTROLE:task-{n}", account=account,
    )  # fmt: skip


def _error(code: str, message: str) -> Reply:
    body = (
        f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>{message}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"
    )
    return Reply(403, body, {"Content-Type": "text/xml"})


class FakeSts:
    def __init__(self) -> None:
        self.http = FakeHttp()
        self.identities: dict[str, Identity] = {}
        self.http.route("POST", "/", self._answer)

    def __enter__(self) -> FakeSts:
        self.http.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    @property
    def endpoint(self) -> str:
        return f"http://{self.http.host}"

    def issue(self, identity: Identity) -> Identity:
        self.identities[identity.access_key] = identity
        return identity

    def calls(self) -> int:
        return self.http.count("POST", "/")

    def _answer(self, seen: Seen) -> Reply:
        match = _AUTH.fullmatch(seen.headers.get("authorization", ""))
        if match is None:
            return _error("MissingAuthenticationToken", "Request is missing Authentication Token")
        who = self.identities.get(match["key"])
        if who is None:
            return _error("InvalidClientTokenId", "The security token included is invalid.")
        if seen.headers.get("x-amz-security-token") != who.token:
            return _error("InvalidClientTokenId", "The security token included is invalid.")
        if seen.headers.get("host") != self.http.host:
            return _error(
                "SignatureDoesNotMatch", "The request signature we calculated does not match"
            )
        stamp = seen.headers.get("x-amz-date", "")
        signed_at = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        if abs(dt.datetime.now(dt.UTC) - signed_at) > dt.timedelta(minutes=15):
            return _error("SignatureDoesNotMatch", "Signature expired")
        names = match["signed"].split(";")
        request = AWSRequest(
            method="POST", url=f"http://{self.http.host}/", data=seen.body,
            headers={n: seen.headers.get(n, "") for n in names},
        )  # fmt: skip
        request.context["timestamp"] = stamp
        auth = SigV4Auth(who.credentials(), "sts", match["region"])
        expected = auth.signature(
            auth.string_to_sign(request, auth.canonical_request(request)), request
        )
        if not hmac.compare_digest(expected, match["sig"]):
            return _error(
                "SignatureDoesNotMatch", "The request signature we calculated does not match"
            )
        if urllib.parse.parse_qs(seen.body.decode()).get("Action") != ["GetCallerIdentity"]:
            return _error("InvalidAction", "only GetCallerIdentity here")
        body = (
            f'<GetCallerIdentityResponse xmlns="{NS}"><GetCallerIdentityResult>'
            f"<Arn>{who.arn}</Arn><UserId>{who.user_id}</UserId><Account>{who.account}</Account>"
            "</GetCallerIdentityResult><ResponseMetadata><RequestId>r-2</RequestId>"
            "</ResponseMetadata></GetCallerIdentityResponse>"
        )
        return Reply(200, body, {"Content-Type": "text/xml"})


def signed_at(config: AwsIamAgentConfig, credentials: Any, when: dt.datetime) -> bytes:
    """The agent's payload, signed as if the clock read ``when`` (an expired or early one)."""
    with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        return sign_request(config, credentials)
