from google.protobuf import empty_pb2 as _empty_pb2
from plastron.proto.spire.api.types import federationrelationship_pb2 as _federationrelationship_pb2
from plastron.proto.spire.api.types import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListFederationRelationshipsRequest(_message.Message):
    __slots__ = ("output_mask", "page_size", "page_token")
    OUTPUT_MASK_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    output_mask: _federationrelationship_pb2.FederationRelationshipMask
    page_size: int
    page_token: str
    def __init__(self, output_mask: _Optional[_Union[_federationrelationship_pb2.FederationRelationshipMask, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFederationRelationshipsResponse(_message.Message):
    __slots__ = ("federation_relationships", "next_page_token")
    FEDERATION_RELATIONSHIPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    federation_relationships: _containers.RepeatedCompositeFieldContainer[_federationrelationship_pb2.FederationRelationship]
    next_page_token: str
    def __init__(self, federation_relationships: _Optional[_Iterable[_Union[_federationrelationship_pb2.FederationRelationship, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetFederationRelationshipRequest(_message.Message):
    __slots__ = ("trust_domain", "output_mask")
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MASK_FIELD_NUMBER: _ClassVar[int]
    trust_domain: str
    output_mask: _federationrelationship_pb2.FederationRelationshipMask
    def __init__(self, trust_domain: _Optional[str] = ..., output_mask: _Optional[_Union[_federationrelationship_pb2.FederationRelationshipMask, _Mapping]] = ...) -> None: ...

class BatchCreateFederationRelationshipRequest(_message.Message):
    __slots__ = ("federation_relationships", "output_mask")
    FEDERATION_RELATIONSHIPS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MASK_FIELD_NUMBER: _ClassVar[int]
    federation_relationships: _containers.RepeatedCompositeFieldContainer[_federationrelationship_pb2.FederationRelationship]
    output_mask: _federationrelationship_pb2.FederationRelationshipMask
    def __init__(self, federation_relationships: _Optional[_Iterable[_Union[_federationrelationship_pb2.FederationRelationship, _Mapping]]] = ..., output_mask: _Optional[_Union[_federationrelationship_pb2.FederationRelationshipMask, _Mapping]] = ...) -> None: ...

class BatchCreateFederationRelationshipResponse(_message.Message):
    __slots__ = ("results",)
    class Result(_message.Message):
        __slots__ = ("status", "federation_relationship")
        STATUS_FIELD_NUMBER: _ClassVar[int]
        FEDERATION_RELATIONSHIP_FIELD_NUMBER: _ClassVar[int]
        status: _status_pb2.Status
        federation_relationship: _federationrelationship_pb2.FederationRelationship
        def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., federation_relationship: _Optional[_Union[_federationrelationship_pb2.FederationRelationship, _Mapping]] = ...) -> None: ...
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchCreateFederationRelationshipResponse.Result]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchCreateFederationRelationshipResponse.Result, _Mapping]]] = ...) -> None: ...

class BatchUpdateFederationRelationshipRequest(_message.Message):
    __slots__ = ("federation_relationships", "input_mask", "output_mask")
    FEDERATION_RELATIONSHIPS_FIELD_NUMBER: _ClassVar[int]
    INPUT_MASK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MASK_FIELD_NUMBER: _ClassVar[int]
    federation_relationships: _containers.RepeatedCompositeFieldContainer[_federationrelationship_pb2.FederationRelationship]
    input_mask: _federationrelationship_pb2.FederationRelationshipMask
    output_mask: _federationrelationship_pb2.FederationRelationshipMask
    def __init__(self, federation_relationships: _Optional[_Iterable[_Union[_federationrelationship_pb2.FederationRelationship, _Mapping]]] = ..., input_mask: _Optional[_Union[_federationrelationship_pb2.FederationRelationshipMask, _Mapping]] = ..., output_mask: _Optional[_Union[_federationrelationship_pb2.FederationRelationshipMask, _Mapping]] = ...) -> None: ...

class BatchUpdateFederationRelationshipResponse(_message.Message):
    __slots__ = ("results",)
    class Result(_message.Message):
        __slots__ = ("status", "federation_relationship")
        STATUS_FIELD_NUMBER: _ClassVar[int]
        FEDERATION_RELATIONSHIP_FIELD_NUMBER: _ClassVar[int]
        status: _status_pb2.Status
        federation_relationship: _federationrelationship_pb2.FederationRelationship
        def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., federation_relationship: _Optional[_Union[_federationrelationship_pb2.FederationRelationship, _Mapping]] = ...) -> None: ...
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchUpdateFederationRelationshipResponse.Result]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchUpdateFederationRelationshipResponse.Result, _Mapping]]] = ...) -> None: ...

class BatchDeleteFederationRelationshipRequest(_message.Message):
    __slots__ = ("trust_domains",)
    TRUST_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    trust_domains: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, trust_domains: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchDeleteFederationRelationshipResponse(_message.Message):
    __slots__ = ("results",)
    class Result(_message.Message):
        __slots__ = ("status", "trust_domain")
        STATUS_FIELD_NUMBER: _ClassVar[int]
        TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
        status: _status_pb2.Status
        trust_domain: str
        def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., trust_domain: _Optional[str] = ...) -> None: ...
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchDeleteFederationRelationshipResponse.Result]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchDeleteFederationRelationshipResponse.Result, _Mapping]]] = ...) -> None: ...

class RefreshBundleRequest(_message.Message):
    __slots__ = ("trust_domain",)
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    trust_domain: str
    def __init__(self, trust_domain: _Optional[str] = ...) -> None: ...
