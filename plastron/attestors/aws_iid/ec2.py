"""The EC2 and IAM look-ups behind aws_iid's API selectors, through boto3 (AWS's client).

DescribeInstances (filtered to pending and running instances) must return exactly the attested
instance: an instance the server's credentials cannot see (another account, terminated) is
refused. Its tags, security groups and instance profile give the ``tag:``, ``sg:id:``,
``sg:name:`` selectors, and GetInstanceProfile the ``iamrole:`` ones. The block-device check
(SPIRE's anti-tampering rule) refuses an instance whose EBS root volume was attached more than
60 s apart from its primary network interface: a root volume moved from another instance.

Clients are made per account and region; with ``assume_role`` the role
``arn:<partition>:iam::<account>:role/<role>`` is assumed through STS and its credentials kept
until shortly before they expire. boto3 is synchronous: callers run this in a thread.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from plastron.attestors.aws_iid.config import AwsApiConfig
from plastron.attestors.aws_iid.document import NAME, IdentityDocument
from plastron.clock import Clock
from plastron.errors import AttestationFailed, Unavailable

MAX_ATTACH_DISPARITY = dt.timedelta(seconds=60)
CREDENTIAL_MARGIN = dt.timedelta(minutes=5)
SESSION_NAME = "plastron-aws-iid"
MAX_CLIENTS = 256
_PROFILE_ARN = re.compile(
    r"arn:[a-z-]+:iam::[0-9]{12}:instance-profile/(?:.*/)?([\w+=,.@-]{1,128})"
)
# boto3/botocore are the [cloud] extra: imported when the API is used, not when the aws_iid
# package is (plastron/extras.py)
_CLIENT_SETTINGS: dict[str, Any] = {
    "connect_timeout": 5,
    "read_timeout": 10,
    "retries": {"max_attempts": 2},
}


@dataclass(frozen=True)
class InstanceFacts:
    """What the EC2 and IAM APIs say about one instance."""

    tags: Mapping[str, str] = field(default_factory=dict)
    security_groups: tuple[tuple[str, str], ...] = ()  # (id, name)
    iam_roles: tuple[str, ...] = ()  # role ARNs


def _api_error(call: str, doc: IdentityDocument, exc: Exception) -> Exception:
    import botocore.exceptions  # noqa: PLC0415  # [cloud] extra

    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        return AttestationFailed(
            f"{NAME}: {call} for {doc.instance_id} (account {doc.account_id}, region "
            f"{doc.region}) failed: {err.get('Code', '?')}: {str(err.get('Message', ''))[:200]}"
        )
    return Unavailable(f"{NAME}: {call} for {doc.instance_id}: the AWS API is unreachable: {exc}")


class Ec2Api:
    """Looks instances up; one instance serves every attestation of the server."""

    def __init__(self, config: AwsApiConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._assumed: dict[str, tuple[dict[str, str], dt.datetime]] = {}
        # building a boto3 client loads its service model: keep them (thread-safe once built)
        self._clients: dict[tuple[str, str, str], Any] = {}

    def describe(self, doc: IdentityDocument, *, roles: bool, block_device: bool) -> InstanceFacts:
        """The instance's facts; AttestationFailed if it is not found or fails the block-device
        check, Unavailable if the API cannot be reached."""
        import botocore.exceptions  # noqa: PLC0415  # [cloud] extra

        try:
            instance = self._instance(doc)
            if block_device:
                check_block_device(instance, doc)
            profile = (instance.get("IamInstanceProfile") or {}).get("Arn")
            iam_roles = self._roles(doc, profile) if roles and profile else ()
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise _api_error("DescribeInstances/GetInstanceProfile", doc, exc) from None
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", []) if "Value" in t}
        groups = tuple((g["GroupId"], g["GroupName"]) for g in instance.get("SecurityGroups", []))
        return InstanceFacts(tags, groups, iam_roles)

    def _instance(self, doc: IdentityDocument) -> dict[str, Any]:
        response = self._client("ec2", doc).describe_instances(
            InstanceIds=[doc.instance_id],
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}],
        )
        found = [i for r in response.get("Reservations", []) for i in r.get("Instances", [])]
        if len(found) != 1 or found[0].get("InstanceId") != doc.instance_id:
            raise AttestationFailed(
                f"{NAME}: DescribeInstances does not show {doc.instance_id} as a pending or "
                f"running instance of account {doc.account_id} in {doc.region}"
            )
        instance: dict[str, Any] = found[0]
        return instance

    def _roles(self, doc: IdentityDocument, profile_arn: str) -> tuple[str, ...]:
        match = _PROFILE_ARN.fullmatch(profile_arn)
        if match is None:
            raise AttestationFailed(f"{NAME}: {profile_arn[:200]!r} is not an instance profile ARN")
        response = self._client("iam", doc).get_instance_profile(InstanceProfileName=match.group(1))
        roles = response.get("InstanceProfile", {}).get("Roles", [])
        return tuple(r["Arn"] for r in roles if r.get("Arn"))

    # ---- clients and credentials ------------------------------------------------------------

    def _client(self, service: str, doc: IdentityDocument) -> Any:
        return self._client_with(service, doc, self._credentials(doc))

    def _client_with(self, service: str, doc: IdentityDocument, credentials: dict[str, str]) -> Any:
        key = (service, doc.region, credentials.get("aws_access_key_id", ""))
        with self._lock:
            client = self._clients.get(key)
        if client is not None:
            return client
        endpoint = {
            "ec2": self._config.ec2_endpoint,
            "iam": self._config.iam_endpoint,
            "sts": self._config.sts_endpoint,
        }[service]
        import boto3  # noqa: PLC0415  # [cloud] extra
        from botocore.config import Config  # noqa: PLC0415

        client = boto3.session.Session().client(
            service,
            region_name=doc.region,
            endpoint_url=endpoint,
            config=Config(**_CLIENT_SETTINGS),
            **credentials,
        )
        with self._lock:
            if len(self._clients) >= MAX_CLIENTS:
                self._clients.clear()  # expired assumed-role keys pile up otherwise
            self._clients[key] = client
        return client

    def _static(self) -> dict[str, str]:
        if self._config.access_key_id is None or self._config.secret_access_key is None:
            return {}  # the SDK's chain: environment, shared files, instance role
        return {
            "aws_access_key_id": self._config.access_key_id,
            "aws_secret_access_key": self._config.secret_access_key,
        }

    def _credentials(self, doc: IdentityDocument) -> dict[str, str]:
        role = self._config.assume_role
        if role is None:
            return self._static()
        arn = f"arn:{self._config.partition}:iam::{doc.account_id}:role/{role}"
        now = self._clock.now()
        with self._lock:
            cached = self._assumed.get(arn)
            if cached is not None and cached[1] - CREDENTIAL_MARGIN > now:
                return cached[0]
        creds, expires = self._assume(arn, doc)
        with self._lock:
            self._assumed[arn] = (creds, expires)
        return creds

    def _assume(self, arn: str, doc: IdentityDocument) -> tuple[dict[str, str], dt.datetime]:
        sts = self._client_with("sts", doc, self._static())
        got = sts.assume_role(RoleArn=arn, RoleSessionName=SESSION_NAME)["Credentials"]
        creds = {
            "aws_access_key_id": got["AccessKeyId"],
            "aws_secret_access_key": got["SecretAccessKey"],
            "aws_session_token": got["SessionToken"],
        }
        return creds, got["Expiration"]


def check_block_device(instance: Mapping[str, Any], doc: IdentityDocument) -> None:
    """SPIRE's anti-tampering rule (``skip_block_device`` turns it off)."""
    primary = [
        n for n in instance.get("NetworkInterfaces", [])
        if (n.get("Attachment") or {}).get("DeviceIndex") == 0
    ]  # fmt: skip
    if not primary:
        raise AttestationFailed(
            f"{NAME}: {doc.instance_id} has no network interface at device index 0"
        )
    if instance.get("RootDeviceType") == "instance-store":
        return
    iface_time = primary[0]["Attachment"].get("AttachTime")
    root_name = instance.get("RootDeviceName")
    roots = [b for b in instance.get("BlockDeviceMappings", []) if b.get("DeviceName") == root_name]
    if not roots or "Ebs" not in roots[0]:
        raise AttestationFailed(
            f"{NAME}: {doc.instance_id} has no block device mapping for its root device "
            f"{str(root_name)[:64]!r}"
        )
    root_time = roots[0]["Ebs"].get("AttachTime")
    if not isinstance(iface_time, dt.datetime) or not isinstance(root_time, dt.datetime):
        raise AttestationFailed(f"{NAME}: {doc.instance_id} attach times are missing")
    disparity = abs(iface_time - root_time)
    if disparity > MAX_ATTACH_DISPARITY:
        raise AttestationFailed(
            f"{NAME}: {doc.instance_id}'s root volume and primary network interface were "
            f"attached {int(disparity.total_seconds())} s apart (at most "
            f"{int(MAX_ATTACH_DISPARITY.total_seconds())} s): the root volume may have been "
            "moved from another instance"
        )
