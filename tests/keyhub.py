"""Test helpers for the key providers: a private SoftHSM2 token store and a hub layout.

SoftHSM2 reads ``SOFTHSM2_CONF`` once, when the PKCS#11 module is initialised, and
python-pkcs11 loads a module once per process; so the whole test process shares one token
directory (made here, under the system temp dir) and every test initialises its own token in
it with a unique label and random PINs. The provider rescans the slots when a label is not
found, so a token made after the module loaded is seen.
"""

from __future__ import annotations

import atexit
import itertools
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent import config
from agent.errors import KeyMaterialError
from agent.keys.provider import KeyProvider
from agent.sealing import WRAPPED_KEY_FILE_SIZE, KeyProtection
from tests import phi_canaries

SOFTHSM_MODULE: Final = Path("/usr/lib/softhsm/libsofthsm2.so")
PROVIDERS: Final = ("file", "pkcs11")

_token_dir: Path | None = None
_counter = itertools.count(1)


def softhsm_available() -> bool:
    """Whether the Debian softhsm2 package is installed (``make system-deps`` installs it)."""
    return SOFTHSM_MODULE.exists() and shutil.which("softhsm2-util") is not None


def token_dir() -> Path:
    """The process-wide SoftHSM2 token directory; sets ``SOFTHSM2_CONF`` on first use."""
    global _token_dir
    if _token_dir is None:
        root = Path(tempfile.mkdtemp(prefix="homehub-softhsm-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        tokens = root / "tokens"
        tokens.mkdir(mode=0o700)
        conf = root / "softhsm2.conf"
        conf.write_text(
            f"directories.tokendir = {tokens}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n"
        )
        os.environ["SOFTHSM2_CONF"] = str(conf)
        _token_dir = tokens
    return _token_dir


@dataclass(frozen=True, slots=True)
class Token:
    """A fresh SoftHSM2 token: its label, user PIN and the PIN file."""

    label: str
    pin: str
    pin_file: Path


def init_token(pin_dir: Path) -> Token:
    """Initialise a new token with random PINs; the user PIN is planted as a canary."""
    token_dir()
    label = f"hh-test-{os.getpid()}-{next(_counter)}"
    pin = secrets.token_hex(8)
    so_pin = secrets.token_hex(8)
    phi_canaries.plant(f"token PIN {label}", pin)
    done = subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
         "--so-pin", so_pin],
        check=False,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    phi_canaries.record_output(f"init_token softhsm2-util {label}: stdout", done.stdout)
    phi_canaries.record_output(f"init_token softhsm2-util {label}: stderr", done.stderr)
    done.check_returncode()
    pin_file = pin_dir / "token.pin"
    pin_file.write_text(pin + "\n")
    pin_file.chmod(0o600)
    return Token(label, pin, pin_file)


@dataclass(frozen=True, slots=True)
class Hub:
    """A hub's directories and configuration for one provider."""

    root: Path
    config_file: Path
    cfg: config.Config
    token: Token | None


def make_hub(root: Path, provider: str, *, token: Token | None = None) -> Hub:
    """Directories (state, keys, kek), a signing key file, and a validated configuration.

    ``pkcs11``: a new token unless ``token`` is given (two hubs may share one). The
    signing key is *not* generated in the token here (see :func:`provision_signing_key`).
    """
    for name in ("state", "keys", "kek", "secrets"):
        (root / name).mkdir(mode=0o700, parents=True, exist_ok=True)
    signing = root / "secrets" / "hub-signing.pem"
    if not signing.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        signing.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        signing.chmod(0o600)
    if provider == "pkcs11" and token is None:
        token = init_token(root / "secrets")
    if provider == "pkcs11":
        assert token is not None
        keys = (
            'provider = "pkcs11"\n'
            f'pkcs11_module = "{SOFTHSM_MODULE}"\n'
            f'pkcs11_token = "{token.label}"\n'
            f'pkcs11_pin_file = "{token.pin_file}"\n'
        )
    else:
        keys = f'provider = "file"\nkek_file = "{root / "kek" / "kek.bin"}"\n'
    text = f"""
[hub]
id = "hub-keys-1"
state_dir = "{root / "state"}"

[patient]
id = "{phi_canaries.PATIENT_ID}"

[outbox]
path = "{root / "state" / "outbox.db"}"
key_file = "{root / "keys" / "data.key"}"

[signing]
key_file = "{signing}"

[keys]
{keys}
[mqtt]
host = "127.0.0.1"
ca_file = "{root / "secrets" / "ca.pem"}"
cert_file = "{root / "secrets" / "hub.pem"}"
key_file = "{root / "secrets" / "hub.key"}"
first_connect_jitter_s = 0.0
"""
    config_file = root / "homehub.toml"
    config_file.write_text(text)
    return Hub(root, config_file, config.load(config_file), token)


def plant_hub_secrets(hub: Hub, provider: KeyProvider | None = None) -> None:
    """Plant the hub's KEK (file provider) and its data key as canaries (hex and raw).

    Called after a test, which is early enough: the scan reads every log at the session end.
    """
    kek_file = hub.root / "kek" / "kek.bin"
    key_file = hub.cfg.outbox.key_file
    kek = kek_file.read_bytes() if kek_file.exists() else None
    if kek is not None:
        phi_canaries.plant(f"file KEK of {hub.root}", kek.hex())
    if not key_file.exists():
        return
    data = key_file.read_bytes()
    if len(data) != WRAPPED_KEY_FILE_SIZE:
        return
    aad = b"homehub data key wrap v1" + data[:10]
    try:
        if kek is not None and data[9] == KeyProtection.WRAPPED_FILE_KEK:
            key = AESGCM(kek).decrypt(data[10:22], data[22:], aad)
        elif provider is not None and data[9] == KeyProtection.WRAPPED_PKCS11:
            key = provider.unwrap(data[10:], aad)
        else:
            return
    except (InvalidTag, KeyMaterialError):
        return
    phi_canaries.plant(f"data key of {hub.root}", key.hex())
