"""A DelegatedIdentity caller for tests: ``admin_caller.py SOCKET``, usually run as another
user. It asks for the X509-SVIDs of the workload with selector ``unix:uid:4242`` and prints
one JSON line: {"status": code name, "message": ..., "ids": [SPIFFE IDs]}."""

from __future__ import annotations

import json
import sys

import grpc

from plastron.proto.spire.api.agent.delegatedidentity.v1 import (
    delegatedidentity_pb2 as pb,
)
from plastron.proto.spire.api.agent.delegatedidentity.v1 import (
    delegatedidentity_pb2_grpc as pb_grpc,
)
from plastron.proto.spire.api.types import selector_pb2


def main(socket_path: str) -> None:
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        stub = pb_grpc.DelegatedIdentityStub(channel)
        request = pb.SubscribeToX509SVIDsRequest(
            selectors=[selector_pb2.Selector(type="unix", value="uid:4242")]
        )
        out: dict[str, object] = {"status": "OK", "message": "", "ids": []}
        try:
            for resp in stub.SubscribeToX509SVIDs(request, timeout=30):
                out["ids"] = [
                    f"spiffe://{s.x509_svid.id.trust_domain}{s.x509_svid.id.path}"
                    for s in resp.x509_svids
                ]
                break
        except grpc.RpcError as exc:
            out["status"], out["message"] = exc.code().name, exc.details()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
