"""The key providers (agent/keys/): one suite run against the file provider and SoftHSM2.

Each test is parametrized over ``file`` and ``pkcs11``; the pkcs11 runs use a private
SoftHSM2 token (tests/keyhub.py). Key material made here is planted as a PHI canary, so a
KEK, data key or PIN that reached a log would fail the suite.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pkcs11
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11 import Attribute, KeyType, ObjectClass

from agent import config, cose, keys
from agent.errors import ConfigError, KeyMaterialError
from agent.ingest import Signer
from agent.keys.file_provider import FileKeyProvider
from agent.keys.pkcs11_provider import Pkcs11KeyProvider
from agent.keys.provider import KeyProvider
from agent.sealing import (
    WRAPPED_KEY_FILE_SIZE,
    DataKey,
    KeyProtection,
    Sealer,
    create_data_key,
    load_data_key,
    record_aad,
)
from tests import keyhub, phi_canaries

KNOWN_KEY = bytes.fromhex("5ec7e7da7a6e7c0ffee0ddba11d00d1e" * 2)
phi_canaries.plant("known data key", KNOWN_KEY.hex())

pytestmark = pytest.mark.skipif(
    not keyhub.softhsm_available(), reason="softhsm2 missing: run `make system-deps`"
)


@pytest.fixture(params=keyhub.PROVIDERS)
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[keyhub.Hub]:
    """A hub configured for the provider under test; its KEK and data key become canaries."""
    hub = keyhub.make_hub(tmp_path / "hub", request.param)
    yield hub
    try:
        provider = keys.open_provider(hub.cfg)
    except KeyMaterialError:
        keyhub.plant_hub_secrets(hub)
        return
    try:
        keyhub.plant_hub_secrets(hub, provider)
    finally:
        provider.close()


@pytest.fixture
def opened() -> Iterator[list[KeyProvider]]:
    """Providers opened by a test, closed at its end (a SoftHSM rescan needs that)."""
    providers: list[KeyProvider] = []
    yield providers
    for provider in providers:
        provider.close()


def _open(hub: keyhub.Hub, opened: list[KeyProvider]) -> KeyProvider:
    provider = keys.open_provider(hub.cfg)
    opened.append(provider)
    return provider


def _provision_signing(provider: KeyProvider) -> None:
    """pkcs11: the signing key is generated in the token at provisioning (not at start)."""
    if isinstance(provider, Pkcs11KeyProvider):
        provider.generate_signing_key()


def _kek_bytes(hub: keyhub.Hub) -> bytes | None:
    """The KEK as it is on disk: the file provider's file; pkcs11 has none."""
    path = hub.root / "kek" / "kek.bin"
    return path.read_bytes() if path.exists() else None


class TestDataKey:
    def test_fresh_hub_creates_kek_and_wrapped_key_file(
        self, hub: keyhub.Hub, opened: list[KeyProvider]
    ) -> None:
        """First start: a KEK appears and the data key file is the 70-byte wrapped form."""
        provider = _open(hub, opened)
        assert not provider.has_kek()
        data_key = keys.open_data_key(hub.cfg, provider)
        assert provider.has_kek()
        raw = hub.cfg.outbox.key_file.read_bytes()
        expected = {"file": 0x10, "pkcs11": 0x11}[hub.cfg.keys.provider]
        assert raw[:10] == b"HHDATKEY\x01" + bytes([expected])
        assert len(raw) == WRAPPED_KEY_FILE_SIZE == 70
        assert stat.S_IMODE(os.stat(hub.cfg.outbox.key_file).st_mode) == 0o600
        assert provider.protection == KeyProtection(expected)
        assert load_data_key(hub.cfg.outbox.key_file, provider).key_id == data_key.key_id

    def test_reopening_gives_the_same_key(self, hub: keyhub.Hub, opened: list[KeyProvider]) -> None:
        """A second start (new provider instance) unwraps the same key and opens old records."""
        first = _open(hub, opened)
        sealer = Sealer(keys.open_data_key(hub.cfg, first))
        aad = record_aad("hub-keys-1", 1, "observation")
        sealed = sealer.seal(b"reading", aad=aad)
        first.close()
        again = Sealer(keys.open_data_key(hub.cfg, _open(hub, opened)))
        assert again.key_id == sealer.key_id
        assert again.open(sealed, aad=aad) == b"reading"

    def test_wrapped_file_never_holds_the_key_in_clear(
        self, hub: keyhub.Hub, opened: list[KeyProvider]
    ) -> None:
        """The key file carries neither the key's bytes nor its hex; it unwraps to the key."""
        provider = _open(hub, opened)
        provider.create_kek()
        path = hub.cfg.outbox.key_file
        path.write_bytes(DataKey(KNOWN_KEY).to_wrapped_file_bytes(provider))
        path.chmod(0o600)
        data = path.read_bytes()
        assert KNOWN_KEY not in data
        assert KNOWN_KEY.hex().encode() not in data
        assert load_data_key(path, provider).key_id == DataKey(KNOWN_KEY).key_id

    def test_two_wraps_differ(self, hub: keyhub.Hub, opened: list[KeyProvider]) -> None:
        """Each wrap draws a fresh nonce: wrapping one key twice gives different bytes."""
        provider = _open(hub, opened)
        provider.create_kek()
        a = DataKey(KNOWN_KEY).to_wrapped_file_bytes(provider)
        b = DataKey(KNOWN_KEY).to_wrapped_file_bytes(provider)
        assert a[:10] == b[:10]
        assert a[10:22] != b[10:22]
        assert a[22:] != b[22:]

    @pytest.mark.parametrize("offset", [10, 21, 22, 53, 54, 69])
    def test_altered_wrapped_key_refused(
        self, hub: keyhub.Hub, opened: list[KeyProvider], offset: int
    ) -> None:
        """A flipped bit in nonce, wrapped key or tag fails the unwrap with a fixed reason."""
        provider = _open(hub, opened)
        keys.open_data_key(hub.cfg, provider)
        path = hub.cfg.outbox.key_file
        data = bytearray(path.read_bytes())
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(KeyMaterialError) as info:
            load_data_key(path, provider)
        assert info.value.what == "data key unwrap"
        assert info.value.reason == "authentication failed: another KEK, or the file was altered"

    def test_header_is_bound_to_the_wrap(self, hub: keyhub.Hub, opened: list[KeyProvider]) -> None:
        """Unwrapping with other associated data (another header) fails."""
        provider = _open(hub, opened)
        provider.create_kek()
        wrapped = provider.wrap(KNOWN_KEY, b"header A")
        assert provider.unwrap(wrapped, b"header A") == KNOWN_KEY
        with pytest.raises(KeyMaterialError):
            provider.unwrap(wrapped, b"header B")

    def test_other_provider_kind_refused(self, hub: keyhub.Hub, opened: list[KeyProvider]) -> None:
        """A file wrapped by the other provider kind, or a plain one, is refused by name."""
        provider = _open(hub, opened)
        keys.open_data_key(hub.cfg, provider)
        path = hub.cfg.outbox.key_file
        data = path.read_bytes()
        other = 0x11 if data[9] == 0x10 else 0x10
        path.write_bytes(data[:9] + bytes([other]) + data[10:])
        with pytest.raises(KeyMaterialError) as info:
            load_data_key(path, provider)
        assert info.value.reason == (
            f"key protection is {KeyProtection(other).name}, the configured provider writes "
            f"{provider.protection.name}; refusing to mix providers"
        )
        path.unlink()
        create_data_key(path)  # plain
        with pytest.raises(KeyMaterialError) as info:
            load_data_key(path, provider)
        assert info.value.reason == "size 50 bytes, expected 70"

    def test_another_hubs_kek_cannot_unwrap(
        self, hub: keyhub.Hub, opened: list[KeyProvider], tmp_path: Path
    ) -> None:
        """A data key file copied to a hub with another KEK does not unwrap there."""
        other = keyhub.make_hub(tmp_path / "other", hub.cfg.keys.provider)
        provider = _open(hub, opened)
        keys.open_data_key(hub.cfg, provider)
        other_provider = _open(other, opened)
        other_provider.create_kek()
        with pytest.raises(KeyMaterialError) as info:
            load_data_key(hub.cfg.outbox.key_file, other_provider)
        assert info.value.reason == "authentication failed: another KEK, or the file was altered"

    def test_missing_kek_with_a_data_key_is_refused_not_recreated(
        self, hub: keyhub.Hub, opened: list[KeyProvider]
    ) -> None:
        """Start with a data key but no KEK: refused, and no new KEK is made behind it."""
        provider = _open(hub, opened)
        keys.open_data_key(hub.cfg, provider)
        assert provider.destroy_kek()
        provider.close()
        again = _open(hub, opened)
        with pytest.raises(KeyMaterialError):
            keys.open_data_key(hub.cfg, again)
        assert not again.has_kek()

    def test_kek_never_replaced(self, hub: keyhub.Hub, opened: list[KeyProvider]) -> None:
        """Creating a KEK where one exists is refused (it would strand the data key)."""
        provider = _open(hub, opened)
        provider.create_kek()
        with pytest.raises(KeyMaterialError) as info:
            provider.create_kek()
        assert info.value.reason == "already exists; refusing to replace a KEK"

    def test_missing_data_key_beside_an_outbox_refused(
        self, hub: keyhub.Hub, opened: list[KeyProvider]
    ) -> None:
        """No data key but an outbox file: refused, and no key or KEK is created."""
        provider = _open(hub, opened)
        hub.cfg.outbox.path.write_bytes(b"")
        with pytest.raises(KeyMaterialError) as info:
            keys.open_data_key(hub.cfg, provider)
        assert info.value.reason.startswith("missing while the outbox exists")
        assert not hub.cfg.outbox.key_file.exists()
        assert not provider.has_kek()


class TestSigning:
    def test_envelopes_verify_with_the_providers_public_key(
        self, hub: keyhub.Hub, opened: list[KeyProvider]
    ) -> None:
        """A COSE_Sign1 made through the provider verifies; kid is the public key's id."""
        provider = _open(hub, opened)
        _provision_signing(provider)
        signer = Signer.from_provider(provider)
        assert signer.kid == cose.key_id(provider.public_key())
        envelope = cose.sign1_with(b"payload", signer.sign, signer.kid)
        message = cose.verify1(envelope, provider.public_key())
        assert message.payload == b"payload"
        assert message.kid == signer.kid

    def test_resigning(self, hub: keyhub.Hub, opened: list[KeyProvider]) -> None:
        """file: byte-identical re-signatures (RFC 6979); pkcs11: different, both valid."""
        provider = _open(hub, opened)
        _provision_signing(provider)
        a, b = provider.sign(b"message"), provider.sign(b"message")
        assert len(a) == len(b) == 64
        if hub.cfg.keys.provider == "file":
            assert a == b
        else:
            assert a != b
        for signature in (a, b):
            envelope = cose.sign1_with(b"m", lambda _m, s=signature: s, bytes(16))
            assert len(envelope) > 64

    def test_signature_is_es256_over_the_message(
        self, hub: keyhub.Hub, opened: list[KeyProvider]
    ) -> None:
        """sign() returns r||s that verifies as ECDSA-SHA256 over the exact message."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        provider = _open(hub, opened)
        _provision_signing(provider)
        signature = provider.sign(b"to be signed")
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        provider.public_key().verify(
            encode_dss_signature(r, s), b"to be signed", ec.ECDSA(hashes.SHA256())
        )


class TestSecrecy:
    def test_reprs_hold_no_secret(self, hub: keyhub.Hub, opened: list[KeyProvider]) -> None:
        """A provider's repr names its location, never the KEK, the PIN or the data key."""
        provider = _open(hub, opened)
        data_key = keys.open_data_key(hub.cfg, provider)
        kek = _kek_bytes(hub)
        if kek is not None:
            phi_canaries.plant(f"file KEK {hub.root}", kek.hex())
        text = repr(provider) + str(provider) + repr(data_key)
        for secret in (kek, hub.token.pin.encode() if hub.token else None):
            if secret is not None:
                assert secret.hex() not in text
                assert secret.decode("latin-1") not in text
        expected = {
            "file": f"FileKeyProvider(kek_file={str(hub.root / 'kek' / 'kek.bin')!r})",
            "pkcs11": f"Pkcs11KeyProvider(token={hub.cfg.keys.pkcs11_token!r}, kek='homehub-kek')",
        }[hub.cfg.keys.provider]
        assert repr(provider) == expected

    def test_provider_cannot_be_pickled(self, hub: keyhub.Hub, opened: list[KeyProvider]) -> None:
        """Pickling a provider (which would carry key material or a handle out) is refused."""
        import pickle

        provider = _open(hub, opened)
        with pytest.raises(TypeError):
            pickle.dumps(provider)


class TestPkcs11Only:
    @pytest.fixture
    def token_hub(self, tmp_path: Path) -> keyhub.Hub:
        return keyhub.make_hub(tmp_path / "hub", "pkcs11")

    def test_kek_and_signing_key_are_sensitive_and_never_extractable(
        self, token_hub: keyhub.Hub, opened: list[KeyProvider]
    ) -> None:
        """C_GetAttributeValue(CKA_VALUE) is refused for the KEK and the private key."""
        provider = _open(token_hub, opened)
        assert isinstance(provider, Pkcs11KeyProvider)
        keys.open_data_key(token_hub.cfg, provider)
        provider.generate_signing_key()
        session = provider.session
        kek = session.get_key(ObjectClass.SECRET_KEY, KeyType.AES, label="homehub-kek")
        private = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC, label="homehub-signing")
        for obj in (kek, private):
            assert obj[Attribute.SENSITIVE] is True
            assert obj[Attribute.EXTRACTABLE] is False
            assert obj[Attribute.ALWAYS_SENSITIVE] is True
            assert obj[Attribute.NEVER_EXTRACTABLE] is True
            assert obj[Attribute.TOKEN] is True
            with pytest.raises(pkcs11.AttributeSensitive):
                obj[Attribute.VALUE]
        assert kek[Attribute.VALUE_LEN] == 32

    def test_wrong_pin_refused_without_echoing_it(
        self, token_hub: keyhub.Hub, tmp_path: Path
    ) -> None:
        """A wrong PIN is a KeyMaterialError naming the PKCS#11 error, not the PIN."""
        assert token_hub.token is not None
        wrong = "0" * 8 if token_hub.token.pin != "0" * 8 else "1" * 8
        with pytest.raises(KeyMaterialError) as info:
            Pkcs11KeyProvider(keyhub.SOFTHSM_MODULE, token_hub.token.label, wrong)
        assert info.value.reason == "cannot log in: PKCS#11 PinIncorrect"
        assert wrong not in str(info.value)
        assert token_hub.token.pin not in str(info.value)

    def test_providers_of_one_token_share_the_login_and_check_the_pin(
        self, token_hub: keyhub.Hub, opened: list[KeyProvider]
    ) -> None:
        """Two providers of one token coexist (one login); a wrong PIN cannot join it."""
        assert token_hub.token is not None
        first = _open(token_hub, opened)
        second = _open(token_hub, opened)
        first.create_kek()
        assert second.has_kek()
        with pytest.raises(KeyMaterialError) as info:
            Pkcs11KeyProvider(keyhub.SOFTHSM_MODULE, token_hub.token.label, "not-the-pin")
        assert info.value.reason == "cannot log in: PKCS#11 PinIncorrect"
        first.close()
        assert second.has_kek()  # still logged in: the last provider's close logs out
        wrapped = second.wrap(KNOWN_KEY, b"aad")
        assert second.unwrap(wrapped, b"aad") == KNOWN_KEY

    def test_absent_token_refused(self) -> None:
        """A token label that no slot holds is refused as not present."""
        keyhub.token_dir()
        with pytest.raises(KeyMaterialError) as info:
            Pkcs11KeyProvider(keyhub.SOFTHSM_MODULE, "no-such-token", "1234")
        assert (info.value.what, info.value.reason) == (
            "PKCS#11 token 'no-such-token'",
            "not present",
        )

    def test_missing_signing_key_refused(
        self, token_hub: keyhub.Hub, opened: list[KeyProvider]
    ) -> None:
        """An unprovisioned token has no signing key: a KeyMaterialError, no new key."""
        provider = _open(token_hub, opened)
        with pytest.raises(KeyMaterialError) as info:
            Signer.from_provider(provider)
        assert info.value.reason == "no public key object in the token"


def _files(*roots: Path) -> list[Path]:
    return [p for root in roots for p in sorted(root.rglob("*")) if p.is_file()]


class TestNoKekOnDisk:
    def test_scan_for_a_kek_that_opens_the_wrapped_key(
        self, hub: keyhub.Hub, opened: list[KeyProvider]
    ) -> None:
        """Every 32-byte window of every file the hub and the token store hold is tried as
        the KEK: file provider, the scan finds it (control); pkcs11, no window opens it."""
        provider = _open(hub, opened)
        path = hub.cfg.outbox.key_file
        provider.create_kek()
        path.write_bytes(DataKey(KNOWN_KEY).to_wrapped_file_bytes(provider))
        path.chmod(0o600)
        wrapped = path.read_bytes()
        aad = b"homehub data key wrap v1" + wrapped[:10]
        nonce, body = wrapped[10:22], wrapped[22:]
        roots = [hub.root, keyhub.token_dir()]
        found: list[str] = []
        for file in _files(*roots):
            data = file.read_bytes()
            assert KNOWN_KEY not in data, f"plain data key in {file}"
            for offset in range(len(data) - 31):
                try:
                    AESGCM(data[offset : offset + 32]).decrypt(nonce, body, aad)
                except InvalidTag:
                    continue
                found.append(file.name)
        if hub.cfg.keys.provider == "file":
            assert found == ["kek.bin"]
        else:
            assert found == []
            # the token store was really scanned: this token's objects are files in it
            assert len(_files(keyhub.token_dir())) >= 2
            assert isinstance(provider, Pkcs11KeyProvider)
            assert _kek_bytes(hub) is None


class TestConfig:
    def _cfg(self, hub: keyhub.Hub, keys_text: str) -> config.Config:
        text = hub.config_file.read_text()
        start = text.index("[keys]")
        end = text.index("[mqtt]")
        path = hub.root / "edited.toml"
        path.write_text(text[:start] + "[keys]\n" + keys_text + "\n" + text[end:])
        return config.load(path)

    @pytest.mark.parametrize(
        ("keys_text", "key", "reason"),
        [
            ('provider = "hsm"', "keys.provider", "must be one of file, pkcs11"),
            ('provider = "pkcs11"', "keys.pkcs11_module", "missing (provider 'pkcs11' needs it)"),
            (
                'provider = "file"\npkcs11_token = "t"',
                "keys.pkcs11_token",
                "only for provider 'pkcs11'",
            ),
            (
                'provider = "pkcs11"\nkek_file = "/k"\npkcs11_module = "/m"\n'
                'pkcs11_token = "t"\npkcs11_pin_file = "/p"',
                "keys.kek_file",
                "only for provider 'file'",
            ),
            (
                'kek_file = "/k"\nkek_credential = "kek"',
                "keys.kek_credential",
                "give kek_file or kek_credential",
            ),
            (
                'kek_credential = "../kek"',
                "keys.kek_credential",
                "must be a systemd credential name",
            ),
        ],
    )
    def test_invalid_keys_sections(
        self, tmp_path: Path, keys_text: str, key: str, reason: str
    ) -> None:
        """Each provider takes only its own settings; pkcs11 needs module, token and PIN."""
        hub = keyhub.make_hub(tmp_path / "hub", "file")
        with pytest.raises(ConfigError) as info:
            self._cfg(hub, keys_text)
        assert (info.value.key, info.value.reason) == (key, reason)

    def test_default_is_plain_file_provider(self, tmp_path: Path) -> None:
        """Without [keys] the data key file stays plain (the behaviour before providers)."""
        hub = keyhub.make_hub(tmp_path / "hub", "file")
        cfg = self._cfg(hub, "")
        assert cfg.keys == config.KeysConfig()
        provider = keys.open_provider(cfg)
        assert provider.protection is KeyProtection.PLAIN
        keys.open_data_key(cfg, provider)
        assert cfg.outbox.key_file.read_bytes()[:10] == b"HHDATKEY\x01\x00"

    def test_kek_from_a_systemd_credential(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """kek_credential reads $CREDENTIALS_DIRECTORY/<name> (0400, as systemd makes it)."""
        hub = keyhub.make_hub(tmp_path / "hub", "file")
        creds = tmp_path / "credentials"
        creds.mkdir(mode=0o700)
        (creds / "homehub-kek").write_bytes(os.urandom(32))
        (creds / "homehub-kek").chmod(0o400)
        cfg = self._cfg(hub, 'kek_credential = "homehub-kek"')
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
        provider = keys.open_provider(cfg)
        assert isinstance(provider, FileKeyProvider)
        assert provider.kek_file == creds / "homehub-kek"
        first = keys.open_data_key(cfg, provider).key_id
        assert keys.open_data_key(cfg, keys.open_provider(cfg)).key_id == first
        with pytest.raises(KeyMaterialError) as info:
            provider.create_kek()
        assert info.value.reason == "is a systemd credential: provision it, the hub cannot"
        assert provider.destroy_kek() is False
        assert (creds / "homehub-kek").exists()

    def test_credential_without_systemd_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """kek_credential outside a systemd unit ($CREDENTIALS_DIRECTORY unset) is refused."""
        hub = keyhub.make_hub(tmp_path / "hub", "file")
        cfg = self._cfg(hub, 'kek_credential = "homehub-kek"')
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        with pytest.raises(KeyMaterialError) as info:
            keys.open_provider(cfg)
        assert info.value.reason.startswith("$CREDENTIALS_DIRECTORY is not set")

    def test_kek_inside_state_dir_refused(self, tmp_path: Path) -> None:
        """A KEK file in the state directory (beside the data it protects) is refused."""
        hub = keyhub.make_hub(tmp_path / "hub", "file")
        cfg = self._cfg(hub, f'kek_file = "{hub.root / "state" / "kek.bin"}"')
        with pytest.raises(KeyMaterialError) as info:
            keys.open_provider(cfg)
        assert (
            info.value.reason
            == f"lies inside {(hub.root / 'state').resolve()}, with the data it protects"
        )

    @pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
    def test_loose_kek_file_refused(self, tmp_path: Path, mode: int) -> None:
        """A KEK file readable by group or others is refused, naming its mode."""
        hub = keyhub.make_hub(tmp_path / "hub", "file")
        provider = keys.open_provider(hub.cfg)
        keys.open_data_key(hub.cfg, provider)
        (hub.root / "kek" / "kek.bin").chmod(mode)
        with pytest.raises(KeyMaterialError) as info:
            load_data_key(hub.cfg.outbox.key_file, keys.open_provider(hub.cfg))
        assert info.value.reason == f"mode {mode:04o} gives group/other access; need 0600"
