from plastron.proto.spire.api.types import bundle_pb2 as _bundle_pb2
from plastron.proto.spire.api.types import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CountBundlesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CountBundlesResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class GetBundleRequest(_message.Message):
    __slots__ = ("output_mask",)
    OUTPUT_MASK_FIELD_NUMBER: _ClassVar[int]
    output_mask: _bundle_pb2.BundleMask
    def __init__(self, output_mask: _Optional[_Union[_bundle_pb2.BundleMask, _Mapping]] = ...) -> None: ...

class AppendBundleRequest(_message.Message):
    __slots__ = ("x509_authorities", "jwt_authorities", "output_mask", "wit_authorities")
    X509_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    JWT_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MASK_FIELD_NUMBER: _ClassVar[int]
    WIT_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    x509_authorities: _containers.RepeatedCompositeFieldContainer[_bundle_pb2.X509Certificate]
    jwt_authorities: _containers.RepeatedCompositeFieldContainer[_bundle_pb2.JWTKey]
    output_mask: _bundle_pb2.BundleMask
    wit_authorities: _containers.RepeatedCompositeFieldContainer[_bundle_pb2.WITKey]
    def __init__(self, x509_authorities: _Optional[_Iterable[_Union[_bundle_pb2.X509Certificate, _Mapping]]] = ..., jwt_authorities: _Optional[_Iterable[_Union[_bundle_pb2.JWTKey, _Mapping]]] = ..., output_mask: _Optional[_Union[_bundle_pb2.BundleMask, _Mapping]] = ..., wit_authorities: _Optional[_Iterable[_Union[_bundle_pb2.WITKey, _Mapping]]] = ...) -> None: ...

class PublishJWTAuthorityRequest(_message.Message):
    __slots__ = ("jwt_authority",)
    JWT_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    jwt_authority: _bundle_pb2.JWTKey
    def __init__(self, jwt_authority: _Optional[_Union[_bundle_pb2.JWTKey, _Mapping]] = ...) -> None: ...

class PublishJWTAuthorityResponse(_message.Message):
    __slots__ = ("jwt_authorities",)
    JWT_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    jwt_authorities: _containers.RepeatedCompositeFieldContainer[_bundle_pb2.JWTKey]
    def __init__(self, jwt_authorities: _Optional[_Iterable[_Union[_bundle_pb2.JWTKey, _Mapping]]] = ...) -> None: ...

class PublishWITAuthorityRequest(_message.Message):
    __slots__ = ("wit_authority",)
    WIT_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    wit_authority: _bundle_pb2.WITKey
    def __init__(self, wit_authority: _Optional[_Union[_bundle_pb2.WITKey, _Mapping]] = ...) -> None: ...

class PublishWITAuthorityResponse(_message.Message):
    __slots__ = ("wit_authorities",)
    WIT_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    wit_authorities: _containers.RepeatedCompositeFieldContainer[_bundle_pb2.WITKey]
    def __init__(self, wit_authorities: _Optional[_Iterable[_Union[_bundle_pb2.WITKey, _Mapping]]] = ...) -> None: ...

class ListFederatedBundlesRequest(_message.Message):
    __slots__ = ("output_mask", "page_size", "page_token")
    OUTPUT_MASK_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    output_mask: _bundle_pb2.BundleMask
    page_size: int
    page_token: str
    def __init__(self, output_mask: _Optional[_Union[_bundle_pb2.BundleMask, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFederatedBundlesResponse(_message.Message):
    __slots__ = ("bundles", "next_page_token")
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    bundles: _containers.RepeatedCompositeFieldContainer[_bundle_pb2.Bundle]
    next_page_token: str
    def __init__(self, bundles: _Optional[_Iterable[_Union[_bundle_pb2.Bundle, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetFederatedBundleRequest(_message.Message):
    __slots__ = ("trust_domain", "output_mask")
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MASK_FIELD_NUMBER: _ClassVar[int]
    trust_domain: str
    output_mask: _bundle_pb2.BundleMask
    def __init__(self, trust_domain: _Optional[str] = ..., output_mask: _Optional[_Union[_bundle_pb2.BundleMask, _Mapping]] = ...) -> None: ...

class BatchCreateFederatedBundleRequest(_message.Message):
    __slots__ = ("bundle", "output_mask")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MASK_FIELD_NUMBER: _ClassVar[int]
    bundle: _containers.RepeatedCompositeFieldContainer[_bundle_pb2.Bundle]
    output_mask: _bundle_pb2.BundleMask
    def __init__(self, bundle: _Optional[_Iterable[_Union[_bundle_pb2.Bundle, _Mapping]]] = ..., output_mask: _Optional[_Union[_bundle_pb2.BundleMask, _Mapping]] = ...) -> None: ...

class BatchCreateFederatedBundleResponse(_message.Message):
    __slots__ = ("results",)
    class Result(_message.Message):
        __slots__ = ("status", "bundle")
        STATUS_FIELD_NUMBER: _ClassVar[int]
        BUNDLE_FIELD_NUMBER: _ClassVar[int]
        status: _status_pb2.Status
        bundle: _bundle_pb2.Bundle
        def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., bundle: _Optional[_Union[_bundle_pb2.Bundle, _Mapping]] = ...) -> None: ...
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchCreateFederatedBundleResponse.Result]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchCreateFederatedBundleResponse.Result, _Mapping]]] = ...) -> None: ...

class BatchUpdateFederatedBundleRequest(_message.Message):
    __slots__ = ("bundle", "input_mask", "output_mask")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    INPUT_MASK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MASK_FIELD_NUMBER: _ClassVar[int]
    bundle: _containers.RepeatedCompositeFieldContainer[_bundle_pb2.Bundle]
    input_mask: _bundle_pb2.BundleMask
    output_mask: _bundle_pb2.BundleMask
    def __init__(self, bundle: _Optional[_Iterable[_Union[_bundle_pb2.Bundle, _Mapping]]] = ..., input_mask: _Optional[_Union[_bundle_pb2.BundleMask, _Mapping]] = ..., output_mask: _Optional[_Union[_bundle_pb2.BundleMask, _Mapping]] = ...) -> None: ...

class BatchUpdateFederatedBundleResponse(_message.Message):
    __slots__ = ("results",)
    class Result(_message.Message):
        __slots__ = ("status", "bundle")
        STATUS_FIELD_NUMBER: _ClassVar[int]
        BUNDLE_FIELD_NUMBER: _ClassVar[int]
        status: _status_pb2.Status
        bundle: _bundle_pb2.Bundle
        def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., bundle: _Optional[_Union[_bundle_pb2.Bundle, _Mapping]] = ...) -> None: ...
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchUpdateFederatedBundleResponse.Result]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchUpdateFederatedBundleResponse.Result, _Mapping]]] = ...) -> None: ...

class BatchSetFederatedBundleRequest(_message.Message):
    __slots__ = ("bundle", "output_mask")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MASK_FIELD_NUMBER: _ClassVar[int]
    bundle: _containers.RepeatedCompositeFieldContainer[_bundle_pb2.Bundle]
    output_mask: _bundle_pb2.BundleMask
    def __init__(self, bundle: _Optional[_Iterable[_Union[_bundle_pb2.Bundle, _Mapping]]] = ..., output_mask: _Optional[_Union[_bundle_pb2.BundleMask, _Mapping]] = ...) -> None: ...

class BatchSetFederatedBundleResponse(_message.Message):
    __slots__ = ("results",)
    class Result(_message.Message):
        __slots__ = ("status", "bundle")
        STATUS_FIELD_NUMBER: _ClassVar[int]
        BUNDLE_FIELD_NUMBER: _ClassVar[int]
        status: _status_pb2.Status
        bundle: _bundle_pb2.Bundle
        def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., bundle: _Optional[_Union[_bundle_pb2.Bundle, _Mapping]] = ...) -> None: ...
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchSetFederatedBundleResponse.Result]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchSetFederatedBundleResponse.Result, _Mapping]]] = ...) -> None: ...

class BatchDeleteFederatedBundleRequest(_message.Message):
    __slots__ = ("trust_domains", "mode")
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        RESTRICT: _ClassVar[BatchDeleteFederatedBundleRequest.Mode]
        DELETE: _ClassVar[BatchDeleteFederatedBundleRequest.Mode]
        DISSOCIATE: _ClassVar[BatchDeleteFederatedBundleRequest.Mode]
    RESTRICT: BatchDeleteFederatedBundleRequest.Mode
    DELETE: BatchDeleteFederatedBundleRequest.Mode
    DISSOCIATE: BatchDeleteFederatedBundleRequest.Mode
    TRUST_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    trust_domains: _containers.RepeatedScalarFieldContainer[str]
    mode: BatchDeleteFederatedBundleRequest.Mode
    def __init__(self, trust_domains: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[BatchDeleteFederatedBundleRequest.Mode, str]] = ...) -> None: ...

class BatchDeleteFederatedBundleResponse(_message.Message):
    __slots__ = ("results",)
    class Result(_message.Message):
        __slots__ = ("status", "trust_domain")
        STATUS_FIELD_NUMBER: _ClassVar[int]
        TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
        status: _status_pb2.Status
        trust_domain: str
        def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., trust_domain: _Optional[str] = ...) -> None: ...
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchDeleteFederatedBundleResponse.Result]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchDeleteFederatedBundleResponse.Result, _Mapping]]] = ...) -> None: ...
