"""Listing filters shared by entries and nodes: set-match queries and opaque page tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, FromClause, Select, and_, case, func, or_, select

from plastron.errors import InvalidArgument
from plastron.records import MatchMode
from plastron.selector import Selector
from plastron.wire.limits import MAX_PAGE_SIZE

MAX_FILTER_ITEMS = 1_000
MATCH_MODES = ("exact", "subset", "superset", "any")


def parse_page(page_size: int, page_token: str) -> tuple[int | None, int]:
    """(limit or None for "all", id after which the page starts)."""
    if not isinstance(page_size, int) or not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be within 0..{MAX_PAGE_SIZE} (got {page_size!r})")
    if not page_token:
        return (page_size or None), 0
    if len(page_token) > 20 or not page_token.isascii() or not page_token.isdigit():
        raise InvalidArgument(f"page_token {page_token[:40]!r} is not a token this server issued")
    return (page_size or None), int(page_token)


def next_token(limit: int | None, last_ids: Sequence[int]) -> str:
    if limit is None or len(last_ids) < limit:
        return ""
    return str(last_ids[-1])


def check_match(what: str, items: Sequence[Any], match: MatchMode) -> None:
    if match not in MATCH_MODES:
        raise InvalidArgument(f"{what} match {match!r} is not one of {', '.join(MATCH_MODES)}")
    if not items:
        raise InvalidArgument(f"{what} filter needs at least one item")
    if len(items) > MAX_FILTER_ITEMS:
        raise InvalidArgument(f"{what} filter has more than {MAX_FILTER_ITEMS} items")


def selector_predicate(type_col: Any, value_col: Any, sels: Sequence[Selector]) -> Any:
    return or_(*(and_(type_col == s.type, value_col == s.value) for s in dict.fromkeys(sels)))


def set_match(
    source: FromClause,
    key: Any,
    predicate: ColumnElement[bool],
    n_given: int,
    match: MatchMode,
) -> Select[Any]:
    """Keys whose child rows (in ``source``, grouped by ``key``) match the given set.

    Child rows are distinct per key (the datastore de-duplicates on write), so counts are set
    sizes: ``hits`` = |child ∩ given|, ``count(*)`` = |child|.
      any      hits ≥ 1
      superset hits = |given|                   (child ⊇ given)
      subset   hits = |child|                   (child ⊆ given, child non-empty)
      exact    hits = |given| and |child| = |given|
    """
    candidates = select(key).select_from(source).where(predicate)
    if match == "any":
        return candidates.distinct()
    hits = func.sum(case((predicate, 1), else_=0))
    grouped = select(key).select_from(source).where(key.in_(candidates)).group_by(key)
    if match == "superset":
        return grouped.having(hits == n_given)
    if match == "subset":
        return grouped.having(hits == func.count())
    return grouped.having(and_(hits == n_given, func.count() == n_given))
