"""aws_iam configuration through the registered factories, and the STS answer parser: only
roles attest, a DTD is refused, Account and Arn must agree."""

from __future__ import annotations

from typing import Any

import hcl
import pytest

from plastron.attestors.aws_iam.sts import parse_identity
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import AttestationFailed, ConfigError, Unavailable
from plastron.plugins import PluginContext, load_plugins
from plastron.spiffe.ids import TrustDomain

REGISTRIES = load_plugins(["plastron.attestors.aws_iam.plugin"])
CONTEXT = PluginContext(trust_domain=TrustDomain("example.org"))
GOOD = 'server_id = "s1"\naccount_allow_list = ["123456789012"]\n'


def server(text: str) -> Any:
    plugin = PluginConfig("NodeAttestor", "aws_iam", hcl.loads(text))
    return REGISTRIES.server_node_attestors.create(plugin, CONTEXT)


def test_defaults_use_the_global_sts_endpoint() -> None:
    assert "https://sts.amazonaws.com" in repr(server(GOOD))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('account_allow_list = ["123456789012"]', "server_id is required"),
        ('server_id = "s1"', "account_allow_list is required"),
        ('server_id = "s1"\naccount_allow_list = ["1234"]', "12-digit"),
        ('server_id = "has space"\naccount_allow_list = ["123456789012"]', "printable ASCII"),
        (GOOD + 'sts_endpoint = "http://sts.example.com"', "must be an https:// URL"),
        (GOOD + 'max_request_age = "1h"', "at most 15m"),
        (GOOD + "bogus = 1", 'unknown key ".*bogus"'),
    ],
)
def test_bad_server_settings_are_refused(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        server(text)


def _answer(arn: str, account: str = "123456789012") -> bytes:
    return (
        '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<GetCallerIdentityResult><Arn>{arn}</Arn><UserId>AROA:x</UserId>"
        f"<Account>{account}</Account></GetCallerIdentityResult></GetCallerIdentityResponse>"
    ).encode()


def test_roles_are_read_from_session_and_role_arns() -> None:
    arn = "arn:aws:sts::123456789012:assumed-role/web/task-1"
    assert parse_identity(_answer(arn), "t").role == "web"
    assert parse_identity(_answer("arn:aws:iam::123456789012:role/a/b/db"), "t").role == "db"


def test_users_and_inconsistent_or_hostile_answers_are_refused() -> None:
    with pytest.raises(AttestationFailed, match="not an IAM role"):
        parse_identity(_answer("arn:aws:iam::123456789012:user/alice"), "t")
    with pytest.raises(Unavailable, match="disagree"):
        parse_identity(_answer("arn:aws:sts::123456789012:assumed-role/web/t", "999999999999"), "t")
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'
    with pytest.raises(Unavailable, match="DTD"):
        parse_identity(bomb, "t")
