"""Reading secrets from files that must be private: key files, KEK files, PIN files, bonds.

One check for all of them, made on the *opened* descriptor (so mode and owner describe the
bytes actually read, with no window for a swap between check and read), never following a
symbolic link: a regular file, no group/other permission bit, owned by us or root, and exactly
the expected size (:func:`read_private_file`) or at most a bound
(:func:`read_private_file_up_to`). Every refusal is a :class:`KeyMaterialError` naming the file
and the reason, never the content.
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
    fd = _open_private(path, what)
    if fd is None:
        raise KeyMaterialError(what, missing)
    try:
        st_size = os.fstat(fd).st_size
        if st_size != size:
            raise KeyMaterialError(what, f"size {st_size} bytes, expected {size}")
        data = os.read(fd, size + 1)
    except OSError as exc:
        raise KeyMaterialError(what, f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) != size:
        raise KeyMaterialError(what, f"read {len(data)} bytes, expected {size}")
    return data


def read_private_file_up_to(path: Path, what: str, max_size: int) -> bytes | None:
    """Read the whole private file ``path`` (at most ``max_size`` bytes): a file whose size
    varies, such as the bond store; ``None`` when it does not exist."""
    fd = _open_private(path, what)
    if fd is None:
        return None
    try:
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_size:
                raise KeyMaterialError(what, f"larger than {max_size} bytes")
    except OSError as exc:
        raise KeyMaterialError(what, f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_state_file_up_to(path: Path, max_size: int) -> bytes | None:
    """At most ``max_size`` bytes of the regular file ``path``, whoever owns it; None when it
    does not exist, is not a regular file, is larger, or cannot be read.

    For the daemon's small state files that ``homehub status`` shows (hub state, modem
    figures): no secret and no PHI is in them, so the key files' owner check does not apply,
    and a technician's ``sudo homehub status`` reads what the daemon's user wrote."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, max_size + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_size:
                return None
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _open_private(path: Path, what: str) -> int | None:
    """The opened descriptor of ``path`` once it passed the checks (module docstring);
    ``None`` when the file does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
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
    except OSError as exc:
        os.close(fd)
        raise KeyMaterialError(what, f"cannot read: {exc.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd
