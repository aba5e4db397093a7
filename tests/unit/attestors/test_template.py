"""The shared agent_path_template engine: schema checks at parse time, values filling exactly
one segment, and a strict parse of the result (hostile attested values never build an ID)."""

from __future__ import annotations

import pytest

from plastron.attestors.template import MappingValues, PathTemplate, TemplateSchema
from plastron.errors import AttestationFailed, ConfigError
from plastron.spiffe.ids import SpiffeId, TrustDomain

TD = TrustDomain("example.org")
SCHEMA = TemplateSchema(
    method="demo",
    fields=frozenset({("PluginName",), ("AccountID",)}),
    maps=frozenset({"Tags"}),
)


def values(account: str = "123", **tags: str) -> MappingValues:
    fields = {("PluginName",): "demo", ("AccountID",): account}
    return MappingValues("demo", fields, {"Tags": tags})


def test_renders_fields_and_map_keys() -> None:
    tpl = PathTemplate.parse("/{{ .PluginName }}/{{.AccountID}}/{{ .Tags.role }}", SCHEMA)
    assert tpl.uses_map("Tags")
    assert tpl.agent_id(TD, values(role="web")) == SpiffeId(TD, "/spire/agent/demo/123/web")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/{{ .Nope }}", "unknown field '.Nope'; Plastron's demo supports .AccountID"),
        ("/{{ .Labels.x }}", "unknown field '.Labels.x'"),
        ("/{{ .Tags }}", "unknown field '.Tags'"),
        ("/{{ .Tags.a.b }}", "unknown field '.Tags.a.b'"),
        ("/{{ .AccountID | upper }}", "only {{ .Field }} substitutions"),
        ("/{{ printf .AccountID }}", "only {{ .Field }} substitutions"),
        ("/{{- .AccountID }}", "trim markers"),
        ("/{{ .AccountID", "unbalanced"),
        ("", "non-empty string"),
    ],
)
def test_unsupported_templates_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("|", r"\|").replace(".", r"\.")):
        PathTemplate.parse(text, SCHEMA)


@pytest.mark.parametrize("text", ["x/{{ .AccountID }}", "/a/{{ .AccountID }}/", "/a b"])
def test_template_that_cannot_give_an_id_is_refused_at_start(text: str) -> None:
    with pytest.raises(ConfigError, match="cannot produce a valid agent ID"):
        PathTemplate.parse(text, SCHEMA).check_shape()


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("a/b", "holds '/'"),
        ("..", "dot segments"),
        (".", "dot segments"),
        ("", "trailing slash"),
        ("a%2Fb", "percent-encoded"),
        ("a:b", "limited to letters"),
        ("n\u00f6de", "limited to letters"),
        ("a?b", "query or fragment"),
    ],
)
def test_hostile_values_never_build_an_id(tag: str, message: str) -> None:
    tpl = PathTemplate.parse("/{{ .PluginName }}/{{ .Tags.name }}", SCHEMA)
    with pytest.raises(AttestationFailed, match=message) as info:
        tpl.agent_id(TD, values(name=tag))
    assert str(info.value).startswith("demo: ")


def test_missing_map_key_fails_the_attestation() -> None:
    tpl = PathTemplate.parse("/{{ .Tags.rack }}", SCHEMA)
    with pytest.raises(AttestationFailed, match=r"demo: .*\.Tags\.rack"):
        tpl.render(values())


def test_result_stays_in_the_agent_namespace() -> None:
    # a template cannot climb out of /spire/agent: dot segments are refused, never resolved
    tpl = PathTemplate.parse("/{{ .Tags.a }}/server", SCHEMA)
    with pytest.raises(AttestationFailed, match="dot segments"):
        tpl.agent_id(TD, values(a=".."))
