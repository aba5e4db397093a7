"""What the server's prune loop deletes, and how long it keeps it.

Every server sharing the datastore runs the loop; the deletes are idempotent. The retention
windows are SPIRE's defaults:

- join tokens: once expired;
- exchanged credentials (the token exchange's replay record): once the credential expired;
- registration entries: one hour after their ``expires_at``;
- change events: 12 hours (SPIRE's ``prune_events_older_than``). A server's entry cache reads
  new events every second and reloads in full every hour, so an event is long applied, or
  superseded by a reload, when it goes;
- CA journals: a journal whose every X.509 CA and JWT key expired more than 14 days ago
  (SPIRE's safety threshold). The running CA's journal always holds a current authority;
  within a journal only the newest 20 records of each kind are kept as they are written.

Agents go only when ``prune_attested_nodes_expired_for`` is set (SPIRE's key): those whose
X509-SVID expired longer ago than that, at most ``prune_attested_nodes_batch_size`` a pass,
never banned ones, and join-token (non-reattestable) ones only with ``prune_tofu_nodes``.
The nodes of non-unique methods (aws_iam) go once expired, whatever the config.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from plastron.datastore import DataStore
from plastron.records import CAJournal
from plastron.server.ca.journal import all_expired_before
from plastron.server.config import NodePruning

EXPIRED_ENTRY_GRACE = dt.timedelta(hours=1)
EVENT_RETENTION = dt.timedelta(hours=12)
CA_JOURNAL_RETENTION = dt.timedelta(days=14)


@dataclass(frozen=True)
class Pruned:
    """How many rows of each kind one pass deleted."""

    join_tokens: int
    entries: int
    events: int
    ca_journals: int
    exchanged_credentials: int = 0


async def prune_expired(datastore: DataStore, now: dt.datetime) -> Pruned:
    """One prune pass at time ``now``."""
    journal_cutoff = now - CA_JOURNAL_RETENTION

    def stale_journal(journal: CAJournal) -> bool:
        return all_expired_before(journal.data, journal_cutoff)

    unix = int(now.timestamp())
    return Pruned(
        join_tokens=await datastore.prune_join_tokens(unix),
        entries=await datastore.prune_entries(unix - int(EXPIRED_ENTRY_GRACE.total_seconds())),
        events=await datastore.prune_events(unix - int(EVENT_RETENTION.total_seconds())),
        ca_journals=await datastore.prune_ca_journals(stale_journal),
        exchanged_credentials=await datastore.prune_exchanged_credentials(unix),
    )


async def prune_expired_agents(
    datastore: DataStore, now: dt.datetime, pruning: NodePruning | None
) -> int:
    """One pass of ``prune_attested_nodes_expired_for`` (nothing when it is not set)."""
    if pruning is None:
        return 0
    cutoff = int((now - pruning.expired_for).timestamp())
    return await datastore.prune_expired_attested_nodes(
        cutoff,
        include_non_reattestable=pruning.include_non_reattestable,
        limit=pruning.batch_size,
    )
