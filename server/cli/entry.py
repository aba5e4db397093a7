"""``plastron-server entry create|update|delete|show|count`` (SPIRE's flags and output)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import wrappers_pb2

from plastron.proto.spire.api.server.entry.v1 import entry_pb2 as entryv1
from plastron.proto.spire.api.types import entry_pb2, federateswith_pb2, selector_pb2
from plastron.server.cli.admin_client import (
    AdminClient,
    call_one,
    code_name,
    one_line,
    run_with_client,
)
from plastron.server.cli.args import (
    CliError,
    bool_flag,
    flag,
    new_parser,
    output_flag,
    repeated_flag,
    socket_flag,
)
from plastron.server.cli.entry_input import (
    entries_from_data,
    entry_from_flags,
    entry_ids_from_file,
    selector_protos,
    spiffe_id_proto,
    trust_domain_texts,
)
from plastron.server.cli.render import (
    entry_sort_key,
    plural,
    print_count,
    print_entry,
    print_json,
)

LIST_PAGE_SIZE = 500
_SELECTOR_MATCH = {
    "exact": selector_pb2.SelectorMatch.MATCH_EXACT,
    "subset": selector_pb2.SelectorMatch.MATCH_SUBSET,
    "superset": selector_pb2.SelectorMatch.MATCH_SUPERSET,
    "any": selector_pb2.SelectorMatch.MATCH_ANY,
}
_FEDERATES_MATCH = {
    "exact": federateswith_pb2.FederatesWithMatch.MATCH_EXACT,
    "subset": federateswith_pb2.FederatesWithMatch.MATCH_SUBSET,
    "superset": federateswith_pb2.FederatesWithMatch.MATCH_SUPERSET,
    "any": federateswith_pb2.FederatesWithMatch.MATCH_ANY,
}


def _entry_flags(parser: argparse.ArgumentParser, *, create: bool) -> None:
    flag(parser, "entryID", default="", help="registration entry ID")
    flag(parser, "spiffeID", default="", help="the SPIFFE ID this entry represents")
    flag(parser, "parentID", default="", help="the SPIFFE ID of this entry's parent")
    if create:
        bool_flag(parser, "node", "parent is the server: the entry applies to matching nodes")
    repeated_flag(parser, "selector", "a type:value selector; repeatable")
    repeated_flag(parser, "federatesWith", "trust domain to federate with; repeatable")
    repeated_flag(parser, "dns", "DNS name for SVIDs of this entry; repeatable")
    flag(parser, "x509SVIDTTL", type=int, default=0, help="X509-SVID lifetime in seconds")
    flag(parser, "jwtSVIDTTL", type=int, default=0, help="JWT-SVID lifetime in seconds")
    flag(parser, "entryExpiry", type=int, default=0, help="entry expiry, unix seconds")
    flag(parser, "hint", default="", help="hint to tell entries with one SPIFFE ID apart")
    flag(parser, "data", default="", help="JSON file of entries ('-' for stdin)")
    bool_flag(parser, "admin", "the SVID holder may use the admin API")
    bool_flag(parser, "downstream", "the SVID holder is a downstream server")
    bool_flag(parser, "storeSVID", "the SVID is stored through an SVIDStore plugin")
    socket_flag(parser)
    output_flag(parser)


def _filter_flags(parser: argparse.ArgumentParser) -> None:
    flag(parser, "spiffeID", default="", help="filter by SPIFFE ID")
    flag(parser, "parentID", default="", help="filter by parent ID")
    repeated_flag(parser, "selector", "filter by selector; repeatable")
    repeated_flag(parser, "federatesWith", "filter by federated trust domain; repeatable")
    flag(parser, "matchSelectorsOn", choices=tuple(_SELECTOR_MATCH), default="superset")
    flag(parser, "matchFederatesWithOn", choices=tuple(_SELECTOR_MATCH), default="superset")
    flag(parser, "hint", default="", help="filter by hint")
    bool_flag(parser, "downstream", "only downstream entries")
    socket_flag(parser)
    output_flag(parser)


def _filter_fields(ns: argparse.Namespace) -> dict[str, Any]:
    """Filter fields shared by ListEntries and CountEntries."""
    out: dict[str, Any] = {}
    if ns.spiffeID:
        out["by_spiffe_id"] = spiffe_id_proto(ns.spiffeID, "spiffeID")
    if ns.parentID:
        out["by_parent_id"] = spiffe_id_proto(ns.parentID, "parentID")
    if ns.selector:
        out["by_selectors"] = selector_pb2.SelectorMatch(
            selectors=selector_protos(ns.selector), match=_SELECTOR_MATCH[ns.matchSelectorsOn]
        )
    if ns.federatesWith:
        out["by_federates_with"] = federateswith_pb2.FederatesWithMatch(
            trust_domains=trust_domain_texts(ns.federatesWith),
            match=_FEDERATES_MATCH[ns.matchFederatesWithOn],
        )
    if ns.hint:
        out["by_hint"] = wrappers_pb2.StringValue(value=ns.hint)
    # Only filter on downstream when asked: an unset flag means "any", not "not downstream".
    if ns.downstream:
        out["by_downstream"] = wrappers_pb2.BoolValue(value=True)
    return out


def _fail_items(verb: str, failures: Sequence[tuple[str, Any]]) -> None:
    """One stderr line for the batch: the first failure, and how many there were."""
    if not failures:
        return
    what, status = failures[0]
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    raise CliError(
        f"failed to {verb} {what} (code: {code_name(status.code)}, "
        f'msg: "{one_line(status.message)}"){more}'
    )


def _entry_label(entry: entry_pb2.Entry) -> str:
    sid = entry.spiffe_id
    label = f"entry spiffe://{sid.trust_domain}{sid.path}"
    return f"{label} (ID {entry.id})" if entry.id else label


def _write_entries(ns: argparse.Namespace, *, update: bool) -> int:
    entries = entries_from_data(ns.data) if ns.data else [entry_from_flags(ns, update=update)]

    async def body(client: AdminClient) -> Any:
        if update:
            upd = entryv1.BatchUpdateEntryRequest(entries=entries)
            return await client.call(client.entry.BatchUpdateEntry, upd)
        new = entryv1.BatchCreateEntryRequest(entries=entries)
        return await client.call(client.entry.BatchCreateEntry, new)

    resp = run_with_client(ns.socketPath, body)
    if ns.output == "json":
        print_json(resp)
    failures = []
    for sent, result in zip(entries, resp.results, strict=False):
        if result.status.code != 0:
            failures.append((_entry_label(sent), result.status))
        elif ns.output == "pretty":
            print_entry(result.entry)
    if len(resp.results) != len(entries):
        raise CliError(f"server answered {len(resp.results)} results for {len(entries)} entries")
    _fail_items("update" if update else "create", failures)
    return 0


def create(argv: list[str]) -> int:
    parser = new_parser("entry create", "Creates registration entries")
    _entry_flags(parser, create=True)
    return _write_entries(parser.parse_args(argv), update=False)


def update(argv: list[str]) -> int:
    parser = new_parser("entry update", "Updates registration entries")
    _entry_flags(parser, create=False)
    return _write_entries(parser.parse_args(argv), update=True)


def delete(argv: list[str]) -> int:
    parser = new_parser("entry delete", "Deletes registration entries")
    flag(parser, "entryID", default="", help="ID of the entry to delete")
    flag(parser, "file", default="", help='JSON {"ids": [...]} to delete in one batch; - is stdin')
    socket_flag(parser)
    output_flag(parser)
    ns = parser.parse_args(argv)
    if ns.entryID and ns.file:
        raise CliError("-entryID and -file cannot be combined")
    if not ns.entryID and not ns.file:
        raise CliError("an entry ID is required")
    ids = entry_ids_from_file(ns.file) if ns.file else [ns.entryID]
    req = entryv1.BatchDeleteEntryRequest(ids=ids)

    resp = call_one(ns.socketPath, lambda c: c.entry.BatchDeleteEntry, req)
    if ns.output == "json":
        print_json(resp)
    if len(resp.results) != len(ids):
        raise CliError(f"server answered {len(resp.results)} results for {len(ids)} entry IDs")
    failures = [(f"entry with ID {r.id}", r.status) for r in resp.results if r.status.code != 0]
    if ns.output == "pretty":
        deleted = [r.id for r in resp.results if r.status.code == 0]
        for entry_id in deleted:
            print(f"Deleted entry with ID: {entry_id}")
        if failures:
            n = len(failures)
            print(f"\nDeleted {len(deleted)} entries successfully, failed to delete {n}")
        else:
            print(f"\nDeleted {len(deleted)} entries successfully")
    _fail_items("delete", failures)
    return 0


def show(argv: list[str]) -> int:
    parser = new_parser("entry show", "Displays configured registration entries")
    flag(parser, "entryID", default="", help="show only this entry")
    _filter_flags(parser)
    ns = parser.parse_args(argv)
    if ns.entryID and (ns.parentID or ns.spiffeID or ns.selector):
        raise CliError("the -entryID flag can't be combined with others")
    flt = None if ns.entryID else entryv1.ListEntriesRequest.Filter(**_filter_fields(ns))

    async def body(client: AdminClient) -> list[entry_pb2.Entry]:
        if flt is None:
            got = await client.call(
                client.entry.GetEntry,
                entryv1.GetEntryRequest(id=ns.entryID),
                context=f"error fetching entry ID {ns.entryID}",
            )
            return [got]
        entries: list[entry_pb2.Entry] = []
        token = ""
        while True:
            req = entryv1.ListEntriesRequest(filter=flt, page_size=LIST_PAGE_SIZE, page_token=token)
            page = await client.call(
                client.entry.ListEntries, req, context="error fetching entries"
            )
            entries.extend(page.entries)
            token = page.next_page_token
            if not token:
                return entries

    entries = sorted(run_with_client(ns.socketPath, body), key=entry_sort_key)
    if ns.output == "json":
        print_json(entryv1.ListEntriesResponse(entries=entries))
        return 0
    print(f"Found {len(entries)} {plural(len(entries), 'entry', 'entries')}")
    for e in entries:
        print_entry(e)
    return 0


def count(argv: list[str]) -> int:
    parser = new_parser("entry count", "Count registration entries")
    _filter_flags(parser)
    ns = parser.parse_args(argv)
    req = entryv1.CountEntriesRequest(
        filter=entryv1.CountEntriesRequest.Filter(**_filter_fields(ns))
    )

    resp = call_one(ns.socketPath, lambda c: c.entry.CountEntries, req)
    print_count(resp, ns.output, "registration entry", "registration entries")
    return 0


COMMANDS: dict[tuple[str, ...], Callable[[list[str]], int]] = {
    ("entry", "create"): create,
    ("entry", "update"): update,
    ("entry", "delete"): delete,
    ("entry", "show"): show,
    ("entry", "count"): count,
}
