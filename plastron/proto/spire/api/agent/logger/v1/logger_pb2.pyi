from plastron.proto.spire.api.types import logger_pb2 as _logger_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetLoggerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetLogLevelRequest(_message.Message):
    __slots__ = ("new_level",)
    NEW_LEVEL_FIELD_NUMBER: _ClassVar[int]
    new_level: _logger_pb2.LogLevel
    def __init__(self, new_level: _Optional[_Union[_logger_pb2.LogLevel, str]] = ...) -> None: ...

class ResetLogLevelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
