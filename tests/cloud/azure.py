"""A fake Azure on loopback for azure_msi: the Instance Metadata Service (managed identity tokens
signed with a test key for the VM the test chose; the VM's subscription), the Entra signing keys
(published as x5c certificates only, as Entra's carry them), the app token endpoint, and the
Resource Manager calls the resolver makes."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from tests.cloud.fake_http import FakeHttp, Reply, Seen
from tests.cloud.tokens import Issuer

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SUBSCRIPTION = "d5b40d61-272e-48da-beb9-05f295c42bd6"
RESOURCE = "https://management.azure.com/"
JWKS_PATH = "/common/discovery/keys"
IMDS_TOKEN = "/metadata/identity/oauth2/token"
APP_ID = "11111111-2222-3333-4444-555555555555"
APP_SECRET = "test-app-secret"
ARM_APP_TOKEN = "arm-token-for-the-app"
ARM_MI_TOKEN = "arm-token-for-the-server-identity"


def msi_claims(
    principal: str,
    *,
    tenant: str = TENANT,
    audience: str = RESOURCE,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = dt.timedelta(hours=8),
    **override: Any,
) -> dict[str, Any]:
    iat = int((now or dt.datetime.now(dt.UTC)).timestamp())
    claims: dict[str, Any] = {
        "aud": audience,
        "iss": f"https://sts.windows.net/{tenant}/",
        "iat": iat,
        "nbf": iat,
        "exp": iat + int(lifetime.total_seconds()),
        "tid": tenant,
        "sub": principal,
        "oid": principal,
        "appid": "99999999-0000-0000-0000-000000000000",
        "idtyp": "app",
        "xms_mirid": f"/subscriptions/{SUBSCRIPTION}/resourcegroups/frontend/providers/"
        "Microsoft.Compute/virtualMachines/blog",
    }
    claims.update(override)
    return claims


@dataclass
class FakeAzure:
    issuer: Issuer = field(default_factory=lambda: Issuer.make(31, 32, x5c_only=True))
    http: FakeHttp = field(default_factory=FakeHttp)
    principal: str = "6e8a4b9c-1d2e-4f30-8a7b-9c0d1e2f3a4b"
    vms: dict[str, tuple[str, str]] = field(default_factory=dict)  # principal -> (rg, name)

    def __enter__(self) -> FakeAzure:
        self.http.__enter__()
        self.http.route("GET", IMDS_TOKEN, self._imds_token)
        self.http.route("GET", "/metadata/instance", self._imds_instance)
        self.http.route("GET", JWKS_PATH, Reply(200, self.issuer.jwks()))
        self.http.route("POST", f"/{TENANT}/oauth2/v2.0/token", self._app_token)
        self.http.route("GET", f"/subscriptions/{SUBSCRIPTION}/resources", self._resources)
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    @property
    def endpoint(self) -> str:
        return self.http.url("")

    def arm(self) -> str:
        return self.http.url("/")

    def _imds_token(self, seen: Seen) -> Reply:
        if seen.headers.get("metadata") != "true" or seen.query.get("api-version") != [
            "2018-02-01"
        ]:
            return Reply(400, json.dumps({"error": "invalid_request"}))
        resource = seen.query["resource"][0]
        if resource == self.arm():  # the server's own identity, for Resource Manager
            token = ARM_MI_TOKEN
        else:
            token = self.issuer.sign(msi_claims(self.principal, audience=resource))
        body = {"access_token": token, "expires_in": "28800", "resource": resource,
                "token_type": "Bearer"}  # fmt: skip
        return Reply(200, json.dumps(body))

    def _imds_instance(self, seen: Seen) -> Reply:
        if seen.headers.get("metadata") != "true":
            return Reply(400, "{}")
        return Reply(200, json.dumps({"compute": {"subscriptionId": SUBSCRIPTION, "name": "srv"}}))

    def _app_token(self, seen: Seen) -> Reply:
        form = urllib.parse.parse_qs(seen.body.decode())
        if form.get("client_id") != [APP_ID] or form.get("client_secret") != [APP_SECRET]:
            return Reply(401, json.dumps({"error": "invalid_client"}))
        return Reply(200, json.dumps({"access_token": ARM_APP_TOKEN, "expires_in": 3599}))

    def _authorized(self, seen: Seen) -> bool:
        return seen.headers.get("authorization") in (
            f"Bearer {ARM_APP_TOKEN}",
            f"Bearer {ARM_MI_TOKEN}",
        )

    def _resources(self, seen: Seen) -> Reply:
        if not self._authorized(seen):
            return Reply(401, json.dumps({"error": {"code": "AuthenticationFailed"}}))
        flt = seen.query.get("$filter", [""])[0]
        found = [
            {"id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{rg}/providers/"
                   f"Microsoft.Compute/virtualMachines/{name}"}
            for principal, (rg, name) in self.vms.items()
            if f"identity/principalId eq '{principal}'" in flt
        ]  # fmt: skip
        return Reply(200, json.dumps({"value": found}))

    def add_vm(self, principal: str, rg: str, name: str) -> None:
        """A VM with one interface in ``webservers`` NSG and subnet ``vnet/default``."""
        self.vms[principal] = (rg, name)
        base = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{rg}/providers"
        nic = f"{base}/Microsoft.Network/networkInterfaces/{name}-nic"
        vm = {"properties": {"networkProfile": {"networkInterfaces": [{"id": nic}]}}}
        iface = {
            "properties": {
                "networkSecurityGroup": {
                    "id": f"{base}/Microsoft.Network/networkSecurityGroups/webservers"
                },
                "ipConfigurations": [
                    {"properties": {"subnet": {
                        "id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/net/providers/"
                              "Microsoft.Network/virtualNetworks/vnet/subnets/default"}}}
                ],
            }
        }  # fmt: skip
        for path, doc in ((f"{base}/Microsoft.Compute/virtualMachines/{name}", vm), (nic, iface)):
            self.http.route("GET", path, self._guarded(doc))

    def _guarded(self, doc: dict[str, Any]) -> Any:
        def answer(seen: Seen) -> Reply:
            if not self._authorized(seen):
                return Reply(401, json.dumps({"error": {"code": "AuthenticationFailed"}}))
            return Reply(200, json.dumps(doc))

        return answer
