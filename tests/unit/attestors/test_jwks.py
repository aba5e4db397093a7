"""The shared JWT/JWKS verifier of the cloud attestors: key set rules, header rules (alg
allow-list, kid), signature, time claims with bounded leeway, audience and issuer; and the
key-set cache's refresh rules, against a JWKS server on loopback."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plastron.attestors.jwks import (
    MAX_JWKS_KEYS,
    MAX_LEEWAY,
    JwtRefused,
    check_audience,
    check_issuer,
    check_times,
    parse_key_set,
    verify_signature,
)
from plastron.attestors.jwks_source import (
    DEFAULT_REFRESH,
    MAX_REFRESH,
    MIN_REFRESH,
    FileKeySource,
    UrlKeySource,
    refresh_interval,
)
from plastron.clock import ManualClock
from plastron.errors import AttestationFailed, ConfigError
from tests.cloud.fake_http import FakeHttp, Reply
from tests.cloud.tokens import (
    Issuer,
    b64url,
    ec_jwk,
    hmac_signed,
    jwk,
    public_pem,
    rs256_raw,
    rsa_key,
    tamper,
    unsigned,
)

M = "test_method"
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
CLAIMS = {"iss": "https://issuer.test", "aud": "aud-1", "iat": int(NOW.timestamp()) - 60,
          "exp": int(NOW.timestamp()) + 3600}  # fmt: skip
ISSUER = Issuer.make(1, 2)


def verify(token: str, issuer: Issuer = ISSUER) -> dict[str, object]:
    return dict(verify_signature(token, parse_key_set(issuer.jwks(), method=M), method=M).claims)


def refused(token: str, match: str, issuer: Issuer = ISSUER) -> None:
    with pytest.raises(JwtRefused, match=match) as err:
        verify(token, issuer)
    assert str(err.value).startswith(f"{M}: ")


# ---- signature and header -------------------------------------------------------------------


def test_good_token_verifies_with_either_key() -> None:
    assert verify(ISSUER.sign(CLAIMS)) == CLAIMS
    assert verify(ISSUER.sign(CLAIMS, kid="test-kid-2"))["aud"] == "aud-1"


def test_keys_given_only_as_x5c_certificates_verify() -> None:
    azure_style = Issuer.make(3, x5c_only=True)
    assert verify(azure_style.sign(CLAIMS), azure_style) == CLAIMS


def test_tampered_claims_do_not_verify() -> None:
    refused(tamper(ISSUER.sign(CLAIMS), aud="other"), "signature does not verify")


def test_signature_by_another_key_under_a_known_kid_is_refused() -> None:
    refused(ISSUER.sign(CLAIMS, key=rsa_key(9)), "signature does not verify with key 'test-kid-1'")


def test_unknown_kid_is_refused() -> None:
    other = Issuer.make(9)
    refused(other.sign(CLAIMS), "key id 'test-kid-9' is not in the key set")


def test_missing_kid_is_refused() -> None:
    refused(rs256_raw(CLAIMS, {"alg": "RS256"}, rsa_key(1)), "no 'kid'")


def test_alg_none_is_refused() -> None:
    for alg in ("none", "None", "NONE"):
        refused(unsigned(CLAIMS, {"alg": alg, "kid": "test-kid-1"}), "alg 'none' is refused")


def test_hs256_keyed_with_the_public_key_is_refused() -> None:
    # the classic key-confusion forgery: HMAC with the provider's public key as the secret
    token = hmac_signed(CLAIMS, public_pem(rsa_key(1)), "test-kid-1")
    refused(token, "alg 'HS256' is refused: HMAC")


def test_other_algorithms_are_refused() -> None:
    for alg in ("RS384", "PS256", "ES256"):
        refused(rs256_raw(CLAIMS, {"alg": alg, "kid": "test-kid-1"}, rsa_key(1)), "allowed: RS256")


def test_crit_header_is_refused() -> None:
    token = rs256_raw(CLAIMS, {"alg": "RS256", "kid": "test-kid-1", "crit": ["b64"]}, rsa_key(1))
    refused(token, "'crit'")


def test_key_offered_by_the_token_is_never_used() -> None:
    attacker = rsa_key(9)
    header = {"alg": "RS256", "kid": "evil", "jwk": jwk("evil", attacker)}
    refused(rs256_raw(CLAIMS, header, attacker), "'evil' is not in the key set")


def test_token_for_an_ec_key_of_the_set_names_it() -> None:
    issuer = Issuer.make(1)
    keys = parse_key_set(issuer.jwks(extra=[ec_jwk("ec-1")]), method=M)
    token = rs256_raw(CLAIMS, {"alg": "RS256", "kid": "ec-1"}, rsa_key(1))
    with pytest.raises(JwtRefused, match="'ec-1' names a 'EC' key, not an RS256 key"):
        verify_signature(token, keys, method=M)


@pytest.mark.parametrize(
    ("token", "match"),
    [
        ("", "empty"),
        ("a.b", "3 parts"),
        ("a.b.c.d", "3 parts"),
        ("x" * 20000, "longer than"),
        ("é.b.c", "not ASCII"),
        ("eyJ=.e30.AA", "base64url"),
        ("e30.e30.AA", "no 'alg'"),
        ("W10.e30.AA", "must be a JSON object"),
    ],
)
def test_malformed_tokens_are_refused(token: str, match: str) -> None:
    refused(token, match)


def test_duplicate_claim_keys_are_refused() -> None:
    good = ISSUER.sign(CLAIMS)
    head = good.split(".")[0]
    body = b64url(b'{"aud":"aud-1","aud":"other"}')
    refused(f"{head}.{body}.{good.split('.')[2]}", "signature does not verify|duplicate")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_is_refused_cleanly(text: str) -> None:
    with pytest.raises(JwtRefused):
        verify(text)


# ---- key set --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ("[]", "must be a JSON object"),
        ('{"keys": {}}', "no 'keys' array"),
        ('{"keys": [{"kty": "RSA"}]}', "no usable 'kid'"),
        ('{"keys": [1]}', "not a JSON object"),
        ('{"keys": [{"kty": "RSA", "kid": "a"}]}', "neither n/e nor"),
        ('{"keys": [{"kty": "RSA", "kid": "a", "n": "AQAB", "e": "AQAB"}]}', "modulus"),
        ('{"keys": [{"kty": "RSA", "kid": "a", "x5c": ["!!"]}]}', "not base64"),
        ('{"keys": [{"kty": "RSA", "kid": "a", "x5c": ["AAAA"]}]}', "x5c"),
    ],
)
def test_malformed_key_sets_are_refused(doc: str, match: str) -> None:
    with pytest.raises(JwtRefused, match=match):
        parse_key_set(doc, method=M)


def test_key_set_with_a_kid_twice_is_refused() -> None:
    doc = json.dumps({"keys": [jwk("a", rsa_key(1)), jwk("a", rsa_key(2))]})
    with pytest.raises(JwtRefused, match="key id 'a' twice"):
        parse_key_set(doc, method=M)


def test_key_set_whose_x5c_disagrees_with_n_e_is_refused() -> None:
    mixed = jwk("a", rsa_key(1)) | {"x5c": jwk("a", rsa_key(2), x5c=True)["x5c"]}
    with pytest.raises(JwtRefused, match="x5c certificate holds another key"):
        parse_key_set(json.dumps({"keys": [mixed]}), method=M)


def test_key_set_size_is_bounded() -> None:
    many = {"keys": [ec_jwk(f"k{i}") for i in range(MAX_JWKS_KEYS + 1)]}
    with pytest.raises(JwtRefused, match=f"at most {MAX_JWKS_KEYS}"):
        parse_key_set(json.dumps(many), method=M)
    with pytest.raises(JwtRefused, match="bytes; at most"):
        parse_key_set(b'{"keys": []' + b" " * (600 * 1024) + b"}", method=M)


# ---- claims ---------------------------------------------------------------------------------


def test_times_with_leeway() -> None:
    leeway = dt.timedelta(minutes=1)
    check_times(CLAIMS, now=NOW, leeway=leeway, method=M)
    expired = CLAIMS | {"exp": int(NOW.timestamp()) - 61}
    with pytest.raises(JwtRefused, match="expired at"):
        check_times(expired, now=NOW, leeway=leeway, method=M)
    check_times(CLAIMS | {"exp": int(NOW.timestamp()) - 59}, now=NOW, leeway=leeway, method=M)
    future = CLAIMS | {"iat": int(NOW.timestamp()) + 61}
    with pytest.raises(JwtRefused, match="issued in the future"):
        check_times(future, now=NOW, leeway=leeway, method=M)
    early = CLAIMS | {"nbf": int(NOW.timestamp()) + 61}
    with pytest.raises(JwtRefused, match="not valid before"):
        check_times(early, now=NOW, leeway=leeway, method=M)
    for missing in ("exp", "iat"):
        claims = {k: v for k, v in CLAIMS.items() if k != missing}
        with pytest.raises(JwtRefused, match=f"lacks the {missing} claim"):
            check_times(claims, now=NOW, leeway=leeway, method=M)
    for bad in ("1700000000", True, 1e300, None):
        if bad is None:
            continue
        with pytest.raises(JwtRefused, match="'exp'"):
            check_times(CLAIMS | {"exp": bad}, now=NOW, leeway=leeway, method=M)


def test_leeway_is_bounded() -> None:
    with pytest.raises(ValueError, match="leeway"):
        check_times(CLAIMS, now=NOW, leeway=MAX_LEEWAY + dt.timedelta(seconds=1), method=M)


def test_audience_and_issuer_compare_exactly() -> None:
    check_audience(CLAIMS, "aud-1", method=M)
    check_audience(CLAIMS | {"aud": ["x", "aud-1"]}, "aud-1", method=M)
    for aud in ("aud-1 ", "AUD-1", ["aud-2"], 7, None):
        with pytest.raises(JwtRefused, match="aud"):
            check_audience(CLAIMS | {"aud": aud}, "aud-1", method=M)
    assert check_issuer(CLAIMS, {"https://issuer.test"}, method=M) == "https://issuer.test"
    with pytest.raises(JwtRefused, match=r"issuer 'https://issuer\.test/' is not"):
        check_issuer(CLAIMS | {"iss": "https://issuer.test/"}, {"https://issuer.test"}, method=M)


# ---- key sources ----------------------------------------------------------------------------


def test_refresh_interval_honours_max_age_within_bounds() -> None:
    assert refresh_interval(None) == DEFAULT_REFRESH
    assert refresh_interval("public, max-age=22049, must-revalidate") == dt.timedelta(seconds=22049)
    assert refresh_interval("max-age=0") == MIN_REFRESH
    assert refresh_interval("max-age=999999999") == MAX_REFRESH
    assert refresh_interval("no-store") == DEFAULT_REFRESH


async def test_url_source_caches_refreshes_and_keeps_a_stale_set_when_the_url_fails() -> None:
    clock = ManualClock(NOW)
    issuer = Issuer.make(1)
    with FakeHttp() as server:
        server.route("GET", "/jwks", Reply(200, issuer.jwks(), {"Cache-Control": "max-age=600"}))
        source = UrlKeySource(server.url("/jwks"), method=M, clock=clock)
        assert "test-kid-1" in await source.get()
        assert "test-kid-1" in await source.get("test-kid-1")
        assert server.count("GET", "/jwks") == 1  # cached
        # an unknown kid refreshes early, but at most once per MIN_REFRESH
        rotated = Issuer.make(2)
        server.route("GET", "/jwks", Reply(200, rotated.jwks(), {"Cache-Control": "max-age=600"}))
        assert "test-kid-2" not in await source.get("test-kid-2")
        assert server.count("GET", "/jwks") == 1
        clock.advance(MIN_REFRESH)
        assert "test-kid-2" in await source.get("test-kid-2")
        assert server.count("GET", "/jwks") == 2
        assert "test-kid-2" in await source.get("made-up")  # no new fetch inside MIN_REFRESH
        assert server.count("GET", "/jwks") == 2
        # max-age passes; the URL fails: the cached set stays in use
        server.route("GET", "/jwks", Reply(500, "boom"))
        clock.advance(dt.timedelta(seconds=601))
        assert "test-kid-2" in await source.get()
        assert server.count("GET", "/jwks") == 3
        clock.advance(dt.timedelta(hours=49))
        with pytest.raises(AttestationFailed, match="older than"):
            await source.get()


async def test_url_source_without_a_set_names_the_failure() -> None:
    with FakeHttp() as server:
        server.route("GET", "/jwks", Reply(404, "not here"))
        source = UrlKeySource(server.url("/jwks"), method=M, clock=ManualClock(NOW))
        with pytest.raises(
            AttestationFailed, match=r"^test_method: key set: .*answered HTTP 404: not here$"
        ):
            await source.get()
        server.route("GET", "/jwks", Reply(200, '{"keys": 5}'))
        with pytest.raises(AttestationFailed, match="no 'keys' array"):
            await source.get()
    closed = UrlKeySource(server.url("/jwks"), method=M, clock=ManualClock(NOW))
    with pytest.raises(AttestationFailed, match="cannot reach"):
        await closed.get()


async def test_file_source_reads_again_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(Issuer.make(1).jwks())
    source = FileKeySource(path, method=M, where="plugin_data.jwks_file")
    assert "test-kid-1" in await source.get()
    path.write_text(Issuer.make(2).jwks())
    os.utime(path, ns=(1, 1))
    assert "test-kid-2" in await source.get()
    path.write_text("{")
    with pytest.raises(ConfigError, match=r"plugin_data\.jwks_file: .*not valid JSON"):
        FileKeySource(path, method=M, where="plugin_data.jwks_file")
