"""Fake AWS services on loopback for aws_iid tests, each an http.server in a thread:

- :class:`FakeImds`: the instance metadata service, IMDSv2 only (a GET without a valid session
  token is 401, a PUT token request without the TTL header 400), serving a document and its
  signatures from a :class:`~tests.aws_fakes.FakeSigner`;
- :class:`FakeAwsApi`: EC2 DescribeInstances, IAM GetInstanceProfile and STS AssumeRole in
  their query-protocol XML, as boto3 calls them, answering from :class:`FakeInstance` records
  and recording which access key signed each call.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from tests.aws_fakes import ACCOUNT, FakeSigner, make_document

_CREDENTIAL = re.compile(r"Credential=([A-Z0-9]+)/")


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class _Server(ThreadingHTTPServer):
    daemon_threads = True


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], owner: Any) -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), handler)
    server.owner = owner  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def owner(self) -> Any:
        return self.server.owner  # type: ignore[attr-defined]

    def reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# ---- the metadata service -------------------------------------------------------------------


@dataclass
class FakeImds:
    """IMDSv2 serving ``document`` with the signer's signatures (or ``overrides``)."""

    signer: FakeSigner = field(default_factory=FakeSigner)
    document: bytes = field(default_factory=make_document)
    overrides: dict[str, bytes] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, bool]] = field(default_factory=list)  # method, path, token ok

    def body(self, name: str) -> bytes:
        """What the service serves for ``name`` (signed once, then served as it is)."""
        if name not in self.overrides:
            if name == "document":
                return self.document
            sign = {"signature": self.signer.signature, "rsa2048": self.signer.rsa2048}[name]
            self.overrides[name] = sign(self.document).encode()
        return self.overrides[name]

    @contextmanager
    def run(self) -> Iterator[str]:
        with serving(_ImdsHandler, self) as url:
            yield url


class _ImdsHandler(_Handler):
    def do_PUT(self) -> None:
        imds: FakeImds = self.owner
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        imds.requests.append(("PUT", self.path, bool(ttl)))
        if self.path != "/latest/api/token" or not ttl or not ttl.isdigit():
            self.reply(400, b"missing or bad X-aws-ec2-metadata-token-ttl-seconds")
            return
        token = secrets.token_urlsafe(24)
        imds.tokens.add(token)
        self.reply(200, token.encode())

    def do_GET(self) -> None:
        imds: FakeImds = self.owner
        ok = self.headers.get("X-aws-ec2-metadata-token", "") in imds.tokens
        imds.requests.append(("GET", self.path, ok))
        if not ok:
            self.reply(401, b"")
            return
        prefix = "/latest/dynamic/instance-identity/"
        name = self.path.removeprefix(prefix)
        if not self.path.startswith(prefix) or name not in ("document", "signature", "rsa2048"):
            self.reply(404, b"not found")
            return
        self.reply(200, imds.body(name))


# ---- the EC2, IAM and STS APIs --------------------------------------------------------------


@dataclass
class FakeInstance:
    instance_id: str
    account: str = ACCOUNT
    state: str = "running"
    tags: dict[str, str] = field(default_factory=dict)
    groups: list[tuple[str, str]] = field(default_factory=lambda: [("sg-0a1b2c3d", "web")])
    profile: str | None = None  # instance profile name
    roles: list[str] = field(default_factory=list)  # role names in the profile
    root_device_type: str = "ebs"
    root_attached: dt.datetime = field(
        default_factory=lambda: dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    )
    interface_attached: dt.datetime | None = None  # default: with the root volume

    def profile_arn(self) -> str:
        return f"arn:aws:iam::{self.account}:instance-profile/{self.profile}"

    def role_arn(self, role: str) -> str:
        return f"arn:aws:iam::{self.account}:role/{role}"


@dataclass
class FakeAwsApi:
    instances: dict[str, FakeInstance] = field(default_factory=dict)
    # access key id of each call, by action
    calls: list[tuple[str, str]] = field(default_factory=list)
    assumed_key_id: str = "ASIAFAKEASSUMED00001"
    assumed_roles: list[str] = field(default_factory=list)

    def add(self, instance: FakeInstance) -> FakeInstance:
        self.instances[instance.instance_id] = instance
        return instance

    @contextmanager
    def run(self) -> Iterator[str]:
        with serving(_ApiHandler, self) as url:
            yield url

    def actions(self) -> list[str]:
        return [action for action, _ in self.calls]


class _ApiHandler(_Handler):
    def do_POST(self) -> None:
        api: FakeAwsApi = self.owner
        length = int(self.headers.get("Content-Length", "0"))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        found = _CREDENTIAL.search(self.headers.get("Authorization", ""))
        action = form.get("Action", "")
        api.calls.append((action, found.group(1) if found else ""))
        handler = {
            "DescribeInstances": _describe_instances,
            "GetInstanceProfile": _get_instance_profile,
            "AssumeRole": _assume_role,
        }.get(action)
        if handler is None:
            self.reply(400, _error("InvalidAction", action), "text/xml")
            return
        status, body = handler(api, form)
        self.reply(status, body.encode(), "text/xml")


def _error(code: str, message: str) -> bytes:
    return (
        f"<Response><Errors><Error><Code>{escape(code)}</Code><Message>{escape(message)}"
        "</Message></Error></Errors><RequestID>fake</RequestID></Response>"
    ).encode()


def _describe_instances(api: FakeAwsApi, form: dict[str, str]) -> tuple[int, str]:
    wanted = form.get("InstanceId.1", "")
    instance = api.instances.get(wanted)
    if instance is None:
        msg = f"The instance ID '{wanted}' does not exist"
        return 400, _error("InvalidInstanceID.NotFound", msg).decode()
    states = [v for k, v in form.items() if k.startswith("Filter.1.Value.")]
    items = "" if states and instance.state not in states else _instance_xml(instance)
    reservation = (
        f"<item><reservationId>r-0fake</reservationId><ownerId>{instance.account}</ownerId>"
        f"<instancesSet>{items}</instancesSet></item>"
    )
    return 200, (
        '<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        f"<requestId>fake</requestId><reservationSet>{reservation if items else ''}"
        "</reservationSet></DescribeInstancesResponse>"
    )


def _instance_xml(i: FakeInstance) -> str:
    iface_time = i.interface_attached or i.root_attached
    tags = "".join(
        f"<item><key>{escape(k)}</key><value>{escape(v)}</value></item>" for k, v in i.tags.items()
    )
    groups = "".join(
        f"<item><groupId>{escape(g)}</groupId><groupName>{escape(n)}</groupName></item>"
        for g, n in i.groups
    )
    profile = (
        f"<iamInstanceProfile><arn>{i.profile_arn()}</arn><id>AIPAFAKE</id></iamInstanceProfile>"
        if i.profile
        else ""
    )
    return (
        f"<item><instanceId>{i.instance_id}</instanceId>"
        f"<instanceState><code>16</code><name>{i.state}</name></instanceState>"
        f"<rootDeviceType>{i.root_device_type}</rootDeviceType>"
        "<rootDeviceName>/dev/xvda</rootDeviceName>"
        "<blockDeviceMapping><item><deviceName>/dev/xvda</deviceName><ebs>"
        f"<volumeId>vol-0fake</volumeId><status>attached</status>"
        f"<attachTime>{_iso(i.root_attached)}</attachTime>"
        "<deleteOnTermination>true</deleteOnTermination></ebs></item></blockDeviceMapping>"
        "<networkInterfaceSet><item><networkInterfaceId>eni-0fake</networkInterfaceId>"
        "<attachment><attachmentId>eni-attach-0fake</attachmentId><deviceIndex>0</deviceIndex>"
        f"<status>attached</status><attachTime>{_iso(iface_time)}</attachTime>"
        "<deleteOnTermination>true</deleteOnTermination></attachment></item>"
        f"</networkInterfaceSet><groupSet>{groups}</groupSet>{profile}"
        f"<tagSet>{tags}</tagSet></item>"
    )


def _get_instance_profile(api: FakeAwsApi, form: dict[str, str]) -> tuple[int, str]:
    name = form.get("InstanceProfileName", "")
    owner = next((i for i in api.instances.values() if i.profile == name), None)
    if owner is None:
        return 404, _error("NoSuchEntity", f"Instance Profile {name} cannot be found.").decode()
    roles = "".join(
        f"<member><Path>/</Path><RoleName>{r}</RoleName><RoleId>AROAFAKE</RoleId>"
        f"<Arn>{owner.role_arn(r)}</Arn><CreateDate>2024-01-01T00:00:00Z</CreateDate>"
        "<AssumeRolePolicyDocument>%7B%7D</AssumeRolePolicyDocument></member>"
        for r in owner.roles
    )
    return 200, (
        '<GetInstanceProfileResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">'
        "<GetInstanceProfileResult><InstanceProfile><Path>/</Path>"
        f"<InstanceProfileName>{name}</InstanceProfileName>"
        "<InstanceProfileId>AIPAFAKE</InstanceProfileId>"
        f"<Arn>{owner.profile_arn()}</Arn><CreateDate>2024-01-01T00:00:00Z</CreateDate>"
        f"<Roles>{roles}</Roles></InstanceProfile></GetInstanceProfileResult>"
        "<ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata>"
        "</GetInstanceProfileResponse>"
    )


def _assume_role(api: FakeAwsApi, form: dict[str, str]) -> tuple[int, str]:
    api.assumed_roles.append(form.get("RoleArn", ""))
    expires = _iso(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    return 200, (
        '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        "<AssumeRoleResult><Credentials>"
        f"<AccessKeyId>{api.assumed_key_id}</AccessKeyId>"
        "<SecretAccessKey>fakeassumedsecret</SecretAccessKey>"
        "<SessionToken>fakesessiontoken</SessionToken>"
        f"<Expiration>{expires}</Expiration></Credentials>"
        f"<AssumedRoleUser><AssumedRoleId>AROAFAKE:plastron</AssumedRoleId>"
        f"<Arn>{escape(form.get('RoleArn', ''))}</Arn></AssumedRoleUser>"
        "</AssumeRoleResult><ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata>"
        "</AssumeRoleResponse>"
    )
