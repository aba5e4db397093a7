"""The pkcs11 KeyManager passes the shared KeyManager conformance suite on SoftHSM2."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from softhsm_token import SoftHsmToken

from plastron.errors import InvalidArgument
from plastron.hsm.keymanager import Pkcs11KeyManager, create_pkcs11_key_manager
from plastron.keymanager import KeyManager, KeyType
from plastron.spiffe.ids import TrustDomain
from tests.conformance.keymanager import PersistentKeyManagerConformance

TD = TrustDomain("example.org")
pytestmark = pytest.mark.softhsm


class TestPkcs11KeyManager(PersistentKeyManagerConformance):
    # RSA-4096 works (test_pkcs11_outage.py::test_rsa_4096) but its keygen costs seconds;
    # the suite would make a dozen of them
    key_types = (KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048)

    @pytest.fixture
    def keymanager(self, softhsm_token: SoftHsmToken) -> Iterator[Pkcs11KeyManager]:
        km = create_pkcs11_key_manager(softhsm_token.plugin_data(), trust_domain=TD, server_id="s")
        yield km
        km.close()

    @pytest.fixture
    def reopen(self, softhsm_token: SoftHsmToken) -> Iterator[Callable[[], KeyManager]]:
        opened: list[Pkcs11KeyManager] = []

        def open_again() -> KeyManager:
            km = create_pkcs11_key_manager(
                softhsm_token.plugin_data(), trust_domain=TD, server_id="s"
            )
            opened.append(km)
            return km

        yield open_again
        for km in opened:
            km.close()

    def test_bad_and_unsupported_key_types_are_rejected(self, keymanager: KeyManager) -> None:
        # every KeyType is supported; only the not-a-KeyType half of the suite's test applies
        with pytest.raises(InvalidArgument, match="key type"):
            keymanager.generate_key("k", "ec-p256")  # type: ignore[arg-type]
        assert keymanager.get_public_keys() == []
