"""Where systemd keeps the KEK when it is an encrypted credential (``[keys] kek_credential``).

The unit names ``LoadCredentialEncrypted=homehub-kek`` without a path, so systemd looks for
the file in its credential stores (docs/install.md) and hands the decrypted KEK to the unit
only, in ``$CREDENTIALS_DIRECTORY``. A technician's shell has no such directory: ``homehub
doctor`` and ``homehub factory-reset`` find the encrypted file itself here. It is sealed to
the hub's TPM or host key; deleting it destroys the KEK as surely as deleting a KEK file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

CREDSTORE_DIRS: Final = (
    Path("/etc/credstore.encrypted"),
    Path("/run/credstore.encrypted"),
    Path("/usr/local/lib/credstore.encrypted"),
    Path("/usr/lib/credstore.encrypted"),
)
"""systemd 252's search order for an encrypted credential given by name."""


def encrypted_credentials(name: str, dirs: Sequence[Path] = CREDSTORE_DIRS) -> list[Path]:
    """Every encrypted credential file called ``name`` in ``dirs`` (systemd uses the first;
    a reset must destroy them all)."""
    return [d / name for d in dirs if (d / name).is_file()]
