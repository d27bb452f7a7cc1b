#!/usr/bin/env python3
"""Install homehub into a root (``/`` or a throwaway ``--destdir``), or remove it again.

Run by ``make install``, ``make uninstall`` and ``make deb`` (docs/install.md says what goes
where and why). Standard library only: it runs before any virtualenv of ours exists.

The product's virtualenv is built at a staging path beside its final place, then every
reference to the staging path is rewritten to the final one (script shebangs, activate
scripts, pyvenv.cfg) and the compiled ``.pyc`` files are given the final source paths; only
then is it renamed into place. So a venv staged under a DESTDIR or a Debian package's tree
runs from ``/opt/homehub/.venv`` with no trace of the build machine, and an upgrade on a
running hub swaps the whole venv in one rename (the running daemon keeps its open files).

Both directions are idempotent: a second install with the same inputs rewrites nothing (files
are compared before they are copied; the venv carries a fingerprint of its wheels), and a
second uninstall finds nothing to remove. The technician's configuration is created only
when absent and, like the patient data in /var/lib/homehub, survives an uninstall unless
``--purge`` is given.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[1]
FINAL_VENV: Final = Path("/opt/homehub/.venv")
FINGERPRINT_FILE: Final = ".homehub-fingerprint"
"""Inside the venv: what it was built from, so an unchanged reinstall leaves it alone."""


@dataclass(frozen=True)
class Item:
    """One file install puts in place: where from (in the repository), where to, its mode."""

    source: Path
    target: Path
    mode: int


SYSUSERS: Final = Path("/usr/lib/sysusers.d/homehub.conf")
TMPFILES: Final = Path("/usr/lib/tmpfiles.d/homehub.conf")
# Debian bookworm (and so Raspberry Pi OS) ships units in /lib/systemd/system: with the merged
# /usr, dpkg must see a file under the same path other packages use (DEP 17).
FILES: Final = (
    Item(REPO / "systemd/homehub.service", Path("/lib/systemd/system/homehub.service"), 0o644),
    Item(REPO / "systemd/homehub.sysusers.conf", SYSUSERS, 0o644),
    Item(REPO / "systemd/homehub.tmpfiles.conf", TMPFILES, 0o644),
    Item(
        REPO / "systemd/homehub.dbus.conf",
        Path("/usr/share/dbus-1/system.d/homehub.conf"),
        0o644,
    ),
    Item(REPO / "README.md", Path("/usr/share/doc/homehub/README.md"), 0o644),
    Item(REPO / "docs/install.md", Path("/usr/share/doc/homehub/install.md"), 0o644),
    Item(REPO / "docs/architecture.md", Path("/usr/share/doc/homehub/architecture.md"), 0o644),
    Item(
        REPO / "config/homehub.example.toml",
        Path("/usr/share/doc/homehub/homehub.example.toml"),
        0o644,
    ),
)
COMMAND_LINK: Final = Path("/usr/bin/homehub")
CONFIG: Final = Item(REPO / "config/homehub.example.toml", Path("/etc/homehub/homehub.toml"), 0o640)
DIRS_REMOVED_WHEN_EMPTY: Final = (Path("/usr/share/doc/homehub"), Path("/opt/homehub"))
PURGED: Final = (Path("/etc/homehub"), Path("/var/lib/homehub"))
UNIT: Final = "homehub.service"


def _under(root: Path, path: Path) -> Path:
    """``path`` (absolute) inside ``root``."""
    return root / path.relative_to("/")


def _say(message: str) -> None:
    sys.stdout.write(f"install.py: {message}\n")


def _copy_if_changed(item: Item, root: Path) -> None:
    """Copy unless the target already holds the same bytes; set the mode either way."""
    target = _under(root, item.target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not (target.is_file() and filecmp.cmp(item.source, target, shallow=False)):
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(item.source, tmp)
        tmp.replace(target)
        _say(f"installed {item.target}")
    if target.stat().st_mode & 0o7777 != item.mode:
        target.chmod(item.mode)


def _wheels(wheelhouse: Path, project_wheel: Path) -> list[Path]:
    return [*sorted(wheelhouse.glob("*.whl")), project_wheel]


def _fingerprint(wheels: list[Path], python: Path) -> str:
    """What the venv is made of: the interpreter, this script, and each wheel's RECORD.

    A wheel's RECORD lists every file with its sha256, so it names the content; the wheel's
    own bytes are not used because a rebuilt wheel of unchanged sources differs in its
    timestamps.
    """
    version = subprocess.run(
        [str(python), "-c", "import sys; print(sys.version)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    digest = hashlib.sha256(f"{python}\0{version}\0".encode())
    digest.update(Path(__file__).read_bytes())  # how the venv is laid out
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
            digest.update(wheel.name.encode() + b"\0" + archive.read(record))
    return digest.hexdigest()


def _rewrite_paths(venv: Path, staging: str, final: str) -> None:
    """Replace the staging path by the final one wherever the venv recorded it."""
    old, new = staging.encode(), final.encode()
    candidates = [p for p in (venv / "bin").iterdir() if p.is_file() and not p.is_symlink()]
    candidates.append(venv / "pyvenv.cfg")
    for path in candidates:
        data = path.read_bytes()
        if old in data:
            mode = path.stat().st_mode
            path.write_bytes(data.replace(old, new))
            path.chmod(mode & 0o7777)


def _files_naming(venv: Path, text: str) -> list[Path]:
    """Every regular file of the venv (but its compiled bytecode) containing ``text``."""
    needle = text.encode()
    return [
        path
        for path in venv.rglob("*")
        if path.is_file() and not path.is_symlink() and path.suffix != ".pyc"
        if needle in path.read_bytes()
    ]


def _drop_direct_url(venv: Path) -> None:
    """Forget where pip found our own wheel (a path on the build machine).

    pip records a wheel installed from a file as ``homehub @ file:///…``; the installed
    package is a release, not a checkout, and the SBOM should say so.
    """
    for direct_url in venv.glob("lib/python3*/site-packages/homehub-*.dist-info/direct_url.json"):
        record = direct_url.parent / "RECORD"
        lines = record.read_text().splitlines(keepends=True)
        record.write_text("".join(ln for ln in lines if "/direct_url.json," not in ln))
        direct_url.unlink()


def _make_venv(
    staging: Path, python: Path, pip_python: Path, wheelhouse: Path, project_wheel: Path
) -> None:
    """Create the venv at ``staging``, naming ``FINAL_VENV`` wherever it names itself."""
    # No pip inside: the hub never installs anything itself; upgrades come as a package.
    subprocess.run([str(python), "-m", "venv", "--without-pip", str(staging)], check=True)
    subprocess.run(
        [
            str(pip_python),
            "-m",
            "pip",
            "--python",
            str(staging / "bin/python"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-index",  # everything comes from the wheelhouse: offline, pinned
            "--find-links",
            str(wheelhouse),
            "--no-compile",  # compiled below, with the final paths
            "--constraint",
            str(REPO / "constraints.txt"),
            str(project_wheel),
        ],
        check=True,
    )
    _rewrite_paths(staging, str(staging), str(FINAL_VENV))
    leftover = [str(p) for p in _files_naming(staging, str(staging))]
    if leftover:
        raise SystemExit(f"install.py: the staging path is still named in {leftover}")
    _drop_direct_url(staging)
    # /opt is read-only to the daemon (ProtectSystem=strict): without .pyc files every start
    # would compile everything again in memory. The recorded source paths are the final ones.
    subprocess.run(
        [
            str(staging / "bin/python"),
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "-s",
            str(staging),
            "-p",
            str(FINAL_VENV),
            str(staging / "lib"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _store(venv: Path, cache: Path, fingerprint: str) -> None:
    """Keep a copy of the venv as the cache's only entry (one venv is ~100 MB)."""
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f".{fingerprint}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(venv, partial, symlinks=True)
    for entry in cache.iterdir():
        if entry != partial:
            shutil.rmtree(entry, ignore_errors=True)
    partial.rename(cache / fingerprint)


def _build_venv(
    root: Path,
    python: Path,
    pip_python: Path,
    wheelhouse: Path,
    project_wheel: Path,
    cache: Path | None,
) -> None:
    """Build the product venv for ``/opt/homehub/.venv`` inside ``root`` (skip if unchanged)."""
    final = _under(root, FINAL_VENV)
    wheels = _wheels(wheelhouse, project_wheel)
    fingerprint = _fingerprint(wheels, python)
    mark = final / FINGERPRINT_FILE
    if mark.is_file() and mark.read_text().strip() == fingerprint:
        _say(f"{FINAL_VENV} is up to date")
        return
    staging = final.with_name(".venv.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    cached = cache / fingerprint if cache is not None else None
    if cached is not None and (cached / FINGERPRINT_FILE).is_file():
        # Built for the final paths, a venv is the same wherever it is staged: a copy
        # (mtimes kept, so the .pyc files stay valid) instead of a rebuild.
        shutil.copytree(cached, staging, symlinks=True)
        _say(f"{FINAL_VENV}: a copy of the one built last ({cache})")
    else:
        _make_venv(staging, python, pip_python, wheelhouse, project_wheel)
        (staging / FINGERPRINT_FILE).write_text(fingerprint + "\n")
        if cache is not None:
            _store(staging, cache, fingerprint)
    old = final.with_name(".venv.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    _say(f"{FINAL_VENV} in place")


def _link_command(root: Path) -> None:
    link = _under(root, COMMAND_LINK)
    target = FINAL_VENV / "bin/homehub"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    if link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(target)
    _say(f"linked {COMMAND_LINK} -> {target}")


def _live(root: Path) -> bool:
    """Acting on the running system (no DESTDIR, as root): users, directories, systemd."""
    return root == Path("/") and os.geteuid() == 0


def _systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir()


def install(args: argparse.Namespace) -> None:
    root = Path(args.destdir or "/").absolute()  # pip records absolute paths
    os.umask(0o022)
    _build_venv(root, args.python, args.pip_python, args.wheelhouse, args.wheel, args.venv_cache)
    _link_command(root)
    for item in FILES:
        _copy_if_changed(item, root)
    config = _under(root, CONFIG.target)
    if args.config and not config.exists():
        # Only when absent: a technician's (or `homehub pair`'s) configuration is never
        # replaced. The example's placeholders keep the unit from starting (it waits for the
        # hub's certificate, see the unit's ConditionPathExists=).
        config.parent.mkdir(parents=True, exist_ok=True)
        _copy_if_changed(CONFIG, root)
    if _live(root):
        subprocess.run(["systemd-sysusers", str(SYSUSERS)], check=True)
        subprocess.run(["systemd-tmpfiles", "--create", str(TMPFILES)], check=True)
        if _systemd_running():
            subprocess.run(["systemctl", "daemon-reload"], check=True)
            # A running agent is restarted on the new code; a stopped one stays stopped.
            subprocess.run(["systemctl", "try-restart", UNIT], check=True)


def uninstall(args: argparse.Namespace) -> None:
    root = Path(args.destdir or "/").absolute()
    if _live(root) and _systemd_running():
        subprocess.run(["systemctl", "disable", "--now", UNIT], check=False)
    for path in [*(item.target for item in FILES), COMMAND_LINK]:
        target = _under(root, path)
        if target.is_file() or target.is_symlink():
            target.unlink()
            _say(f"removed {path}")
    for name in (".venv", ".venv.staging", ".venv.old"):
        venv = _under(root, FINAL_VENV.with_name(name))
        if venv.exists():
            shutil.rmtree(venv)
            _say(f"removed {FINAL_VENV.with_name(name)}")
    for directory in DIRS_REMOVED_WHEN_EMPTY:
        target = _under(root, directory)
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
    if args.purge:
        # The configuration, the keys and the outbox: unsent readings are lost with it.
        for path in PURGED:
            target = _under(root, path)
            if target.exists():
                shutil.rmtree(target)
                _say(f"purged {path}")
    if _live(root) and _systemd_running():
        subprocess.run(["systemctl", "daemon-reload"], check=True)
    # The user homehub stays (Debian's practice): files it owned may remain, and a new user
    # given its uid later would own them.


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="action", required=True)
    inst = sub.add_parser("install")
    inst.add_argument("--destdir", default="", help="a root to install into (default: /)")
    inst.add_argument(
        "--python",
        type=Path,
        required=True,
        help="the hub's interpreter the venv is made from (the versioned system python)",
    )
    inst.add_argument(
        "--pip-python", type=Path, required=True, help="a python with pip (the build venv)"
    )
    inst.add_argument("--wheelhouse", type=Path, required=True, help="the pinned dependencies")
    inst.add_argument("--wheel", type=Path, required=True, help="homehub's own wheel")
    inst.add_argument(
        "--venv-cache",
        type=Path,
        default=None,
        help="a directory keeping the last venv built, copied when its inputs are unchanged",
    )
    inst.add_argument(
        "--no-config",
        dest="config",
        action="store_false",
        help="do not create /etc/homehub/homehub.toml (the Debian package: postinst does)",
    )
    uninst = sub.add_parser("uninstall")
    uninst.add_argument("--destdir", default="")
    uninst.add_argument(
        "--purge",
        action="store_true",
        help="also remove /etc/homehub and /var/lib/homehub: configuration, keys, unsent readings",
    )
    args = parser.parse_args(argv)
    if args.action == "install":
        install(args)
    else:
        uninstall(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
