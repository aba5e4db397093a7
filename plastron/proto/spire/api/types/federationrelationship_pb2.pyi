from plastron.proto.spire.api.types import bundle_pb2 as _bundle_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FederationRelationship(_message.Message):
    __slots__ = ("trust_domain", "bundle_endpoint_url", "https_web", "https_spiffe", "trust_domain_bundle")
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_ENDPOINT_URL_FIELD_NUMBER: _ClassVar[int]
    HTTPS_WEB_FIELD_NUMBER: _ClassVar[int]
    HTTPS_SPIFFE_FIELD_NUMBER: _ClassVar[int]
    TRUST_DOMAIN_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    trust_domain: str
    bundle_endpoint_url: str
    https_web: HTTPSWebProfile
    https_spiffe: HTTPSSPIFFEProfile
    trust_domain_bundle: _bundle_pb2.Bundle
    def __init__(self, trust_domain: _Optional[str] = ..., bundle_endpoint_url: _Optional[str] = ..., https_web: _Optional[_Union[HTTPSWebProfile, _Mapping]] = ..., https_spiffe: _Optional[_Union[HTTPSSPIFFEProfile, _Mapping]] = ..., trust_domain_bundle: _Optional[_Union[_bundle_pb2.Bundle, _Mapping]] = ...) -> None: ...

class HTTPSSPIFFEProfile(_message.Message):
    __slots__ = ("endpoint_spiffe_id",)
    ENDPOINT_SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    endpoint_spiffe_id: str
    def __init__(self, endpoint_spiffe_id: _Optional[str] = ...) -> None: ...

class HTTPSWebProfile(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FederationRelationshipMask(_message.Message):
    __slots__ = ("bundle_endpoint_url", "bundle_endpoint_profile", "trust_domain_bundle")
    BUNDLE_ENDPOINT_URL_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_ENDPOINT_PROFILE_FIELD_NUMBER: _ClassVar[int]
    TRUST_DOMAIN_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    bundle_endpoint_url: bool
    bundle_endpoint_profile: bool
    trust_domain_bundle: bool
    def __init__(self, bundle_endpoint_url: _Optional[bool] = ..., bundle_endpoint_profile: _Optional[bool] = ..., trust_domain_bundle: _Optional[bool] = ...) -> None: ...
