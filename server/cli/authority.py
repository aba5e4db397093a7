"""``plastron-server localauthority x509|jwt show|prepare|activate|taint|revoke`` and
``upstreamauthority taint|revoke``: SPIRE's CA authority commands, flags and output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from plastron.proto.spire.api.server.localauthority.v1 import localauthority_pb2 as la
from plastron.server.cli.admin_client import AdminClient, call_one
from plastron.server.cli.args import CliError, flag, new_parser, output_flag, socket_flag
from plastron.server.cli.render import print_json, unix_time_utc

Command = Callable[[list[str]], int]


def authority_lines(state: la.AuthorityState, *, x509: bool) -> list[str]:
    lines = [
        f"  Authority ID: {state.authority_id}",
        f"  Expires at: {unix_time_utc(state.expires_at)}",
    ]
    if x509:
        if state.upstream_authority_subject_key_id:
            skid = state.upstream_authority_subject_key_id
            lines.append(f"  Upstream authority Subject Key ID: {skid}")
        else:
            lines.append("  Upstream authority ID: No upstream authority")
    return lines


@dataclass(frozen=True)
class Verb:
    """One ``localauthority <kind> <verb>``: the RPC, its request, the response field shown."""

    name: str
    synopsis: str
    rpc: str  # method name with {kind}: "Prepare{kind}Authority"
    result_field: str  # "" for show
    title: str  # "Prepared {what} authority:"
    takes_id: bool


VERBS = (
    Verb("show", "Shows the local {what} authorities", "Get{kind}AuthorityState", "", "", False),
    Verb(
        "prepare",
        "Prepares a new {what} authority for use by generating a new key and injecting it "
        "into the bundle",
        "Prepare{kind}Authority",
        "prepared_authority",
        "Prepared {what} authority:",
        False,
    ),
    Verb(
        "activate",
        "Activates a prepared {what} authority for use, which will cause it to be used for all "
        "{what} signing operations serviced by this server going forward",
        "Activate{kind}Authority",
        "activated_authority",
        "Activated {what} authority:",
        True,
    ),
    Verb(
        "taint",
        "Marks the previously active {what} authority as being tainted",
        "Taint{kind}Authority",
        "tainted_authority",
        "Tainted {what} authority:",
        True,
    ),
    Verb(
        "revoke",
        "Revokes the previously active {what} authority by removing it from the bundle and "
        "propagating this update throughout the cluster",
        "Revoke{kind}Authority",
        "revoked_authority",
        "Revoked {what} authority:",
        True,
    ),
)


def _show_lines(resp: Any, what: str, *, x509: bool) -> list[str]:
    lines: list[str] = []
    for field, label in (("active", "Active"), ("prepared", "Prepared"), ("old", "Old")):
        if lines:
            lines.append("")
        lines.append(f"{label} {what} authority:")
        if resp.HasField(field):
            lines += authority_lines(getattr(resp, field), x509=x509)
        else:
            lines.append(f"  No {label.lower()} {what} authority found")
    return lines


def _local_command(verb: Verb, kind: str, what: str) -> Command:
    x509 = kind == "X509"
    rpc = verb.rpc.format(kind=kind)
    request_type = getattr(la, f"{rpc}Request")

    def command(argv: list[str]) -> int:
        name = f"localauthority {'x509' if x509 else 'jwt'} {verb.name}"
        parser = new_parser(name, verb.synopsis.format(what=what))
        if verb.takes_id:
            flag(
                parser,
                "authorityID",
                default="",
                help=f"The authority ID of the {what} authority to {verb.name}",
            )
        socket_flag(parser)
        output_flag(parser)
        ns = parser.parse_args(argv)
        request = request_type()
        if verb.takes_id:
            if not ns.authorityID:
                raise CliError("an authority ID is required")
            request.authority_id = ns.authorityID
        failure = (
            f"could not {verb.name} {what} authority"
            if verb.name != "show"
            else (f"could not get {what} authorities")
        )
        resp = call_one(
            ns.socketPath,
            lambda c: getattr(c.localauthority, rpc),
            request,
            context=failure,
        )
        if ns.output == "json":
            print_json(resp)
        elif verb.name == "show":
            print("\n".join(_show_lines(resp, what, x509=x509)))
        else:
            print(verb.title.format(what=what))
            print("\n".join(authority_lines(getattr(resp, verb.result_field), x509=x509)))
        return 0

    return command


def _upstream_command(verb: str) -> Command:
    rpc = f"{verb.capitalize()}X509UpstreamAuthority"
    request_type = getattr(la, f"{rpc}Request")
    synopsis = {
        "taint": "Marks the provided X.509 upstream authority as being tainted",
        "revoke": "Revokes the previously active X.509 upstream authority by removing it from "
        "the bundle and propagating this update throughout the cluster",
    }[verb]

    def command(argv: list[str]) -> int:
        parser = new_parser(f"upstreamauthority {verb}", synopsis)
        flag(
            parser,
            "subjectKeyID",
            default="",
            help="The X.509 Subject Key Identifier (or SKID) of the authority's CA certificate "
            f"of the X.509 upstream authority to {verb}",
        )
        socket_flag(parser)
        output_flag(parser)
        ns = parser.parse_args(argv)

        def method(client: AdminClient) -> Any:
            return getattr(client.localauthority, rpc)

        resp = call_one(
            ns.socketPath,
            method,
            request_type(subject_key_id=ns.subjectKeyID),
            context=f"could not {verb} X.509 upstream authority",
        )
        if ns.output == "json":
            print_json(resp)
            return 0
        print(f"{ {'taint': 'Tainted', 'revoke': 'Revoked'}[verb] } X.509 upstream authority:")
        print(f"  Subject Key ID: {resp.upstream_authority_subject_key_id}")
        return 0

    return command


COMMANDS: dict[tuple[str, ...], Command] = {
    **{
        ("localauthority", cli_kind, verb.name): _local_command(verb, kind, what)
        for cli_kind, kind, what in (("x509", "X509", "X.509"), ("jwt", "JWT", "JWT"))
        for verb in VERBS
    },
    ("upstreamauthority", "taint"): _upstream_command("taint"),
    ("upstreamauthority", "revoke"): _upstream_command("revoke"),
}
