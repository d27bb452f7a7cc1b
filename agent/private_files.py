"""Reading secrets from files that must be private: key files, KEK files, PIN files.

One check for all of them, made on the *opened* descriptor (so mode and owner describe the
bytes actually read, with no window for a swap between check and read), never following a
symbolic link: a regular file, no group/other permission bit, owned by us or root, exactly the
expected size. Every refusal is a :class:`KeyMaterialError` naming the file and the reason,
never the content.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agent.errors import KeyMaterialError


def read_private_file(path: Path, what: str, size: int, *, missing: str = "missing") -> bytes:
    """Read exactly ``size`` bytes of the private file ``path``; ``what`` names it in errors.

    Args:
        path: the file.
        what: how errors name it, e.g. ``"data key file /etc/homehub/keys/data.key"``.
        size: the only acceptable size in bytes.
        missing: the reason given when the file does not exist.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyMaterialError(what, missing) from None
    except OSError as exc:
        raise KeyMaterialError(what, f"cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyMaterialError(what, "not a regular file")
        if st.st_mode & 0o077:
            mode = stat.S_IMODE(st.st_mode)
            raise KeyMaterialError(what, f"mode {mode:04o} gives group/other access; need 0600")
        if st.st_uid not in (os.geteuid(), 0):
            raise KeyMaterialError(what, f"owned by uid {st.st_uid}, not by uid {os.geteuid()}")
        if st.st_size != size:
            raise KeyMaterialError(what, f"size {st.st_size} bytes, expected {size}")
        data = os.read(fd, size + 1)
    except OSError as exc:
        raise KeyMaterialError(what, f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) != size:
        raise KeyMaterialError(what, f"read {len(data)} bytes, expected {size}")
    return data
