"""Selectors: ``type:value`` facts about a node or a workload (``unix:uid:1000``)."""

from __future__ import annotations

from dataclasses import dataclass

from plastron.errors import InvalidSelector

MAX_SELECTOR_TYPE = 255
MAX_SELECTOR_VALUE = 1024


@dataclass(frozen=True, order=True, slots=True)
class Selector:
    type: str
    value: str

    def __post_init__(self) -> None:
        if not self.type:
            raise InvalidSelector("selector type is empty")
        if ":" in self.type:
            raise InvalidSelector(f"selector type must not contain ':' ({self.type!r})")
        if len(self.type) > MAX_SELECTOR_TYPE:
            raise InvalidSelector(f"selector type is longer than {MAX_SELECTOR_TYPE} characters")
        if not self.value:
            raise InvalidSelector(f"selector value is empty (type {self.type!r})")
        if len(self.value) > MAX_SELECTOR_VALUE:
            raise InvalidSelector(f"selector value is longer than {MAX_SELECTOR_VALUE} characters")

    @classmethod
    def parse(cls, text: str) -> Selector:
        """Parse ``type:value``; the value may itself contain ':' (``unix:uid:1000``)."""
        kind, sep, value = text.partition(":")
        if not sep:
            raise InvalidSelector(f"selector {text!r} is not of the form type:value")
        return cls(kind, value)

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"
