"""The Azure Resource Manager look-ups behind the azure_msi selectors, as SPIRE's resolver does
them, in plain HTTPS with Resource Manager's documented REST shapes:

1. the VM whose managed identity is the token's principal: ``GET subscriptions/{s}/resources``
   filtered on ``resourceType eq 'Microsoft.Compute/virtualMachines' and identity/principalId
   eq '{principal}'`` — exactly one must match;
2. the VM (``virtualMachines/{name}``) for its network interfaces;
3. each interface (``networkInterfaces/{name}``) for its security group and subnets.

Credentials: a tenant's app registration (client-credentials grant at
``{authority}{tenant}/oauth2/v2.0/token``), or else the server's own managed identity (IMDS),
with the subscription the VM runs in. Access tokens are reused until shortly before expiry.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

from plastron.attestors.azure_msi import imds
from plastron.attestors.azure_msi.config import TenantConfig
from plastron.attestors.azure_msi.token import NAME
from plastron.attestors.cloud_http import HttpResponse, request
from plastron.clock import Clock
from plastron.errors import AttestationFailed, Unavailable
from plastron.strict_json import load_untrusted_object

RESOURCES_API = "2021-04-01"
COMPUTE_API = "2024-07-01"
NETWORK_API = "2024-05-01"
MAX_PAGES = 10
MAX_INTERFACES = 16
TOKEN_MARGIN = dt.timedelta(minutes=2)
_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_RG = r"/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/"
_VM_ID = re.compile(_RG + r"Microsoft\.Compute/virtualMachines/([^/]+)", re.IGNORECASE)
_NIC_ID = re.compile(_RG + r"Microsoft\.Network/networkInterfaces/([^/]+)", re.IGNORECASE)
_NSG_ID = re.compile(_RG + r"Microsoft\.Network/networkSecurityGroups/([^/]+)", re.IGNORECASE)
_SUBNET_ID = re.compile(
    _RG + r"Microsoft\.Network/virtualNetworks/([^/]+)/subnets/([^/]+)", re.IGNORECASE
)


def _parse_id(pattern: re.Pattern[str], value: object, what: str) -> tuple[str, ...]:
    match = pattern.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise Unavailable(
            f"{NAME}: Resource Manager gave a malformed {what} ID {str(value)[:300]!r}"
        )
    return match.groups()


def _items(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _props(doc: object) -> dict[str, Any]:
    props = doc.get("properties") if isinstance(doc, dict) else None
    return props if isinstance(props, dict) else {}


class ArmClient:
    """Resource Manager for one tenant."""

    def __init__(
        self, tenant: TenantConfig, *, endpoint: str, authority: str, metadata: str, clock: Clock
    ) -> None:
        self._tenant = tenant
        self._endpoint = endpoint
        self._authority = authority
        self._metadata = metadata
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._token_until = dt.datetime.min.replace(tzinfo=dt.UTC)
        self._subscription = tenant.app.subscription_id if tenant.app else None

    def __repr__(self) -> str:
        return f"ArmClient(tenant={self._tenant.tenant_id!r}, endpoint={self._endpoint!r})"

    # ---- credentials ------------------------------------------------------------------------

    async def _access(self) -> tuple[str, str]:
        """(access token, subscription ID)."""
        async with self._lock:
            now = self._clock.now()
            if self._subscription is None:
                self._subscription = await imds.own_subscription(self._metadata)
            if self._token is None or now >= self._token_until:
                self._token, seconds = await self._new_token()
                lifetime = dt.timedelta(seconds=seconds) - TOKEN_MARGIN
                self._token_until = now + max(dt.timedelta(0), lifetime)
            return self._token, self._subscription

    async def _new_token(self) -> tuple[str, int]:
        app = self._tenant.app
        if app is None:
            what = f"{NAME}: the server's managed identity token"
            return await imds.managed_identity_token(self._metadata, self._endpoint, what=what)
        tenant = urllib.parse.quote(self._tenant.tenant_id, safe="")
        url = f"{self._authority}{tenant}/oauth2/v2.0/token"
        form = urllib.parse.urlencode({
            "grant_type": "client_credentials", "client_id": app.app_id,
            "client_secret": app.app_secret, "scope": f"{self._endpoint}.default",
        })  # fmt: skip
        resp = await request(
            "POST", url, what=f"{NAME}: app token ({url})", body=form.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        doc = self._json(resp, f"the token endpoint {url}")
        token, expires_in = doc.get("access_token"), doc.get("expires_in", 0)
        if not isinstance(token, str) or not token:
            raise Unavailable(f"{NAME}: the token endpoint {url} answered without an access_token")
        ok = isinstance(expires_in, int) and not isinstance(expires_in, bool)
        return token, min(int(expires_in), 86400) if ok else 0

    # ---- requests ---------------------------------------------------------------------------

    def _json(self, resp: HttpResponse, what: str) -> dict[str, Any]:
        if resp.status != 200:
            raise Unavailable(f"{NAME}: {what} answered HTTP {resp.status}: {resp.excerpt()}")
        return load_untrusted_object(
            resp.body, limit=len(resp.body) + 1, what=f"{NAME}: {what}", error=Unavailable
        )

    async def _get(self, url: str, what: str) -> dict[str, Any]:
        token, _ = await self._access()
        resp = await request(
            "GET", url, what=f"{NAME}: {what}", headers={"Authorization": f"Bearer {token}"}
        )
        return self._json(resp, what)

    def _url(self, subscription: str, rg: str, provider_path: str, api: str) -> str:
        parts = [urllib.parse.quote(p, safe="") for p in (subscription, rg)]
        return (
            f"{self._endpoint}subscriptions/{parts[0]}/resourceGroups/{parts[1]}/providers/"
            f"{provider_path}?api-version={api}"
        )

    # ---- the resolver -----------------------------------------------------------------------

    async def selectors(self, principal_id: str) -> list[str]:
        """SPIRE's selector values for the VM whose identity is ``principal_id``, sorted."""
        if not _GUID.fullmatch(principal_id):
            raise AttestationFailed(
                f"{NAME}: principal {principal_id[:100]!r} is not an object ID (GUID)"
            )
        _, subscription = await self._access()
        vm_id = await self._vm_id(subscription, principal_id)
        rg, vm = _parse_id(_VM_ID, vm_id, "virtual machine")
        values = {f"subscription-id:{subscription}", f"resource-group:{rg}", f"vm-name:{rg}:{vm}"}
        path = f"Microsoft.Compute/virtualMachines/{urllib.parse.quote(vm, safe='')}"
        doc = await self._get(
            self._url(subscription, rg, path, COMPUTE_API), f"virtual machine {rg}:{vm}"
        )
        profile = _props(doc).get("networkProfile")
        nics = _items(profile.get("networkInterfaces") if isinstance(profile, dict) else None)
        for ref in nics[:MAX_INTERFACES]:
            values.update(await self._interface(subscription, ref.get("id")))
        return sorted(values)

    async def _vm_id(self, subscription: str, principal_id: str) -> str:
        query = urllib.parse.urlencode({
            "$filter": "resourceType eq 'Microsoft.Compute/virtualMachines' and "
                       f"identity/principalId eq '{principal_id}'",
            "api-version": RESOURCES_API,
        })  # fmt: skip
        sub = urllib.parse.quote(subscription, safe="")
        url: object = f"{self._endpoint}subscriptions/{sub}/resources?{query}"
        found: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            if not isinstance(url, str) or not url.startswith(self._endpoint):
                break  # a nextLink elsewhere would carry our token to another host
            page = await self._get(url, "resources list")
            found += _items(page.get("value"))
            url = page.get("nextLink")
        if len(found) != 1 or not isinstance(found[0].get("id"), str):
            raise AttestationFailed(
                f"{NAME}: expected one virtual machine with principal {principal_id} in "
                f"subscription {subscription}, found {len(found)}"
            )
        return str(found[0]["id"])

    async def _interface(self, subscription: str, nic_id: object) -> Iterable[str]:
        rg, name = _parse_id(_NIC_ID, nic_id, "network interface")
        path = f"Microsoft.Network/networkInterfaces/{urllib.parse.quote(name, safe='')}"
        props = _props(
            await self._get(
                self._url(subscription, rg, path, NETWORK_API), f"network interface {rg}:{name}"
            )
        )
        values: list[str] = []
        nsg = props.get("networkSecurityGroup")
        if isinstance(nsg, dict) and "id" in nsg:
            nsg_rg, nsg_name = _parse_id(_NSG_ID, nsg["id"], "network security group")
            values.append(f"network-security-group:{nsg_rg}:{nsg_name}")
        for ipc in _items(props.get("ipConfigurations")):
            subnet = _props(ipc).get("subnet")
            if isinstance(subnet, dict) and "id" in subnet:
                net_rg, vnet, sub = _parse_id(_SUBNET_ID, subnet["id"], "subnet")
                values += [
                    f"virtual-network:{net_rg}:{vnet}",
                    f"virtual-network-subnet:{net_rg}:{vnet}:{sub}",
                ]
        return values
