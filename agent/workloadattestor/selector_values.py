"""Selectors from values a daemon reported (labels, env, images): SPIRE's ``type:value`` form.

A value a selector cannot hold (empty, longer than a selector value may be) is left out and
logged. Leaving a selector out never grants more: an entry matches only when all its
selectors are among the workload's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from plastron.errors import InvalidSelector
from plastron.selector import Selector

log = logging.getLogger("plastron.agent.workloadattestor")


def selectors_of(selector_type: str, values: Iterable[str]) -> list[Selector]:
    """One selector per distinct value, sorted (the daemons' maps have no order)."""
    out = []
    for value in sorted(set(values)):
        try:
            out.append(Selector(selector_type, value))
        except InvalidSelector as exc:
            log.warning("%s: selector left out: %s", selector_type, exc)
    return out
