"""The provider starts of oidc-discovery.md and cli.md, run as written: the page's own config
(its HCL block: ``serving_cert_file`` on :443, keys from the server API on
/run/plastron/server/api.sock) in front of a real server, and the page's ``curl`` of
https://oidc.example.org answered as the page shows.

The namespace (tests/docs/doc_shell.py) has a network of its own, so :443 can be bound; its
overlaid /etc/hosts maps oidc.example.org to 127.0.0.1, and the serving certificate comes from
a test CA added to the system trust file curl reads (/etc/ssl/certs/ca-certificates.crt): what a
user's host has with a publicly trusted certificate.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.docs.doc_blocks import Block, blocks_tested_by, console_steps, page_blocks
from tests.docs.doc_shell import BLOCK_LINE, needs_namespaces, run_page, start_server
from tests.processes import free_port

pytestmark = needs_namespaces

OIDC_PAGE = Path("docs/oidc-discovery.md")
SERVER_SOCKET = "/run/plastron/server/api.sock"
DISCOVERY_URL = "https://oidc.example.org/.well-known/openid-configuration"
KEYS_URL = "https://oidc.example.org/keys"

# oidc.example.org on this namespace's loopback, its certificate from a CA the host trusts.
PUBLIC_NAME_AND_CERTIFICATE = """mkdir -p /etc/plastron/oidc
echo '127.0.0.1 oidc.example.org' >> /etc/hosts
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \\
    -subj /CN=docs-test-ca -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=oidc.example.org \\
    -addext subjectAltName=DNS:oidc.example.org \\
    -keyout /etc/plastron/oidc/key.pem -out oidc.csr 2>/dev/null
openssl x509 -req -in oidc.csr -CA ca.pem -CAkey ca.key -days 1 -copy_extensions copy \\
    -out /etc/plastron/oidc/cert.pem 2>/dev/null
cat ca.pem >> /etc/ssl/certs/ca-certificates.crt
unset CURL_CA_BUNDLE  # curl's own default, as on a user's host"""


def _wait_for(url: str) -> str:
    """Shell text: wait (with a deadline) while nothing listens for ``url`` (curl's exit 7),
    then require a 200."""
    return (
        "for i in $(seq 600); do rc=0; "
        f"curl -sf -o /dev/null {url} || rc=$?; [ $rc = 7 ] || break; sleep 0.1; done\n"
        f"curl -sf -o /dev/null {url} || {{ cat provider.log; exit 1; }}"
    )


def _provider_config() -> str:
    """The page's config block, as the file its first line names."""
    found = [b for b in page_blocks(OIDC_PAGE) if b.lang == "hcl"]
    config = next(b for b in found if b.text.startswith("# oidc-discovery.conf\n"))
    return f"cat > oidc-discovery.conf <<'CONF'\n{config.text}CONF"


def _started_then(block: Block, *after: str) -> str:
    """Shell text: the block's first command (the provider, which runs until stopped) in the
    background, ready, then the rest of its commands as written, then ``after``; then the
    provider is stopped."""
    first, *rest = console_steps(block)
    assert not first.shown_output, f"{block.where}: the provider prints nothing on stdout"
    return "\n".join(
        [
            f"echo '{BLOCK_LINE}{block.where}'",
            f"{first.command} > provider.log 2>&1 &",
            "provider=$!",
            _wait_for(DISCOVERY_URL),
            *(step.command for step in rest),
            "echo",  # the documents end without a newline: end the block's output here
            *after,
            'kill "$provider" && { wait "$provider" || true; }',
        ]
    )


def _shown(shown: list[str], printed: str) -> bool:
    """``printed`` is what the page shows, a ``...`` line standing for any lines."""
    pattern = "\n".join(".*" if s.strip() == "..." else re.escape(s) for s in shown)
    return re.fullmatch(pattern, printed.rstrip("\n"), re.DOTALL) is not None


def test_provider_blocks_serve_the_discovery_document(tmp_path: Path) -> None:
    blocks = blocks_tested_by(__file__, "test_provider_blocks_serve_the_discovery_document")
    by_page = {b.page: b for b in blocks}
    assert len(by_page) == len(blocks) == 2, [b.where for b in blocks]
    page_block, cli_block = by_page[OIDC_PAGE], by_page[Path("docs/cli.md")]
    keys_ready = (
        f"for i in $(seq 600); do curl -s {KEYS_URL} | grep -q kid && break; sleep 0.1; done\n"
        f'curl -s {KEYS_URL} > "$RESULTS/keys.json"'
    )
    run = run_page(
        tmp_path,
        [
            start_server(free_port(), socket_path=SERVER_SOCKET),
            PUBLIC_NAME_AND_CERTIFICATE,
            _provider_config(),
            _started_then(page_block, keys_ready),
            # cli.md starts it with the default file name SPIRE's provider uses
            "cp oidc-discovery.conf oidc-discovery-provider.conf",
            _started_then(cli_block, f'curl -s {DISCOVERY_URL} > "$RESULTS/cli.json"'),
        ],
        network=True,
    )
    assert run.returncode == 0, run.failure()
    assert "Traceback" not in run.stdout + run.stderr, run.failure()
    printed = run.output_of(page_block)
    assert _shown(console_steps(page_block)[-1].shown_output, printed), printed
    document = json.loads(printed)
    assert document["jwks_uri"] == KEYS_URL
    assert json.loads((tmp_path / "results" / "cli.json").read_text()) == document
    keys = json.loads((tmp_path / "results" / "keys.json").read_text())["keys"]
    assert keys and all(k["use"] == "sig" for k in keys), keys
