from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ExchangeRequest(_message.Message):
    __slots__ = ("credential", "audience", "spiffe_id", "csr", "cluster")
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    CSR_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    credential: str
    audience: _containers.RepeatedScalarFieldContainer[str]
    spiffe_id: str
    csr: bytes
    cluster: str
    def __init__(self, credential: _Optional[str] = ..., audience: _Optional[_Iterable[str]] = ..., spiffe_id: _Optional[str] = ..., csr: _Optional[bytes] = ..., cluster: _Optional[str] = ...) -> None: ...

class ExchangeResponse(_message.Message):
    __slots__ = ("spiffe_id", "token", "expires_at", "x509_svid", "bundle")
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    X509_SVID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    spiffe_id: str
    token: str
    expires_at: int
    x509_svid: _containers.RepeatedScalarFieldContainer[bytes]
    bundle: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, spiffe_id: _Optional[str] = ..., token: _Optional[str] = ..., expires_at: _Optional[int] = ..., x509_svid: _Optional[_Iterable[bytes]] = ..., bundle: _Optional[_Iterable[bytes]] = ...) -> None: ...
