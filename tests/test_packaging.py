"""Installation, the Debian package and the SBOM (issue 11; docs/install.md).

Everything goes through the real targets and tools: ``make install``/``make uninstall`` into a
throwaway root (never ``/``), ``make deb`` inspected with ``dpkg-deb``, ``make sbom`` checked
with cyclonedx-python-lib's schema validator, ``systemd-sysusers``/``systemd-tmpfiles`` with
``--root``, ``systemd-analyze security`` and ``dbus-daemon`` on the installed files.

The dependencies come from the wheelhouse ``make`` keeps under .cache/ (built once per clone,
offline afterwards), so a venv install takes seconds; the slow tests are marked.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Final

import pytest

from tests import phi_canaries

REPO: Final = Path(__file__).resolve().parents[1]
VERSION: Final = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
VENV: Final = Path("opt/homehub/.venv")
MAKE_TIMEOUT_S: Final = 300
# A system bus of the test's own that loads the policy file under test (nothing touches the
# machine's bus): dbus-daemon prints its address only once its configuration parsed.
BUS_CONFIG: Final = """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <policy context="default">
    <allow own="*"/>
    <allow send_destination="*"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"""

# What `make install` puts in a root, with its mode (the venv's content is checked apart).
EXPECTED_FILES: Final = {
    "lib/systemd/system/homehub.service": 0o644,
    "usr/lib/sysusers.d/homehub.conf": 0o644,
    "usr/lib/tmpfiles.d/homehub.conf": 0o644,
    "usr/share/dbus-1/system.d/homehub.conf": 0o644,
    "usr/share/doc/homehub/README.md": 0o644,
    "usr/share/doc/homehub/install.md": 0o644,
    "usr/share/doc/homehub/architecture.md": 0o644,
    "usr/share/doc/homehub/homehub.example.toml": 0o644,
    "etc/homehub/homehub.toml": 0o640,
    f"{VENV}/bin/homehub": 0o755,
    f"{VENV}/pyvenv.cfg": 0o644,
}


def make(*args: str) -> str:
    """Run a make target of the repository; its output, or a failure showing the end of it."""
    done = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=MAKE_TIMEOUT_S,
        check=False,
    )
    phi_canaries.record_output(f"make {args[0]} stdout", done.stdout)
    phi_canaries.record_output(f"make {args[0]} stderr", done.stderr)
    if done.returncode != 0:
        pytest.fail(f"make {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry under ``root``: mode, modification time and content digest (or link)."""
    entries: dict[str, tuple[int, int, str]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            what = "-> " + os.readlink(path)
        elif path.is_file():
            what = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            what = "dir"
        entries[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, what)
    return entries


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway root `make install` installed into."""
    root = tmp_path_factory.mktemp("root")
    make("install", f"DESTDIR={root}")
    return root


def run_installed(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``homehub`` script, by the installed venv's interpreter (its shebang
    names /opt/homehub, which a throwaway root is not); run outside the repository, so
    nothing is imported from the working tree."""
    venv = root / VENV
    done = subprocess.run(
        [str(venv / "bin/python"), str(venv / "bin/homehub"), *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    phi_canaries.record_output(f"installed homehub {args[0]}", done.stdout + done.stderr)
    return done


@pytest.mark.slow
def test_install_puts_every_file_in_place_with_its_mode(installed: Path) -> None:
    for relative, mode in EXPECTED_FILES.items():
        path = installed / relative
        assert path.is_file(), relative
        assert oct(stat.S_IMODE(path.stat().st_mode)) == oct(mode), relative
    link = installed / "usr/bin/homehub"
    assert os.readlink(link) == "/opt/homehub/.venv/bin/homehub"
    hub_python = Path(os.path.realpath("/usr/bin/python3"))  # the Makefile's HUB_PYTHON
    assert (installed / VENV / "bin" / hub_python.name).resolve() == hub_python
    assert (installed / "etc/homehub/homehub.toml").read_bytes() == (
        REPO / "config/homehub.example.toml"
    ).read_bytes()
    assert (installed / "lib/systemd/system/homehub.service").read_bytes() == (
        REPO / "systemd/homehub.service"
    ).read_bytes()
    # No pip in the hub's environment: it never installs anything itself.
    assert not list((installed / VENV).glob("lib/python3*/site-packages/pip"))


@pytest.mark.slow
def test_installed_venv_names_only_its_final_paths(installed: Path) -> None:
    venv = installed / VENV
    assert (venv / "bin/homehub").read_text().splitlines()[0] == "#!/opt/homehub/.venv/bin/python"
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "command = " in cfg
    for needle in (str(installed), str(REPO)):
        named = [
            str(p.relative_to(installed))
            for p in venv.rglob("*")
            if p.is_file() and not p.is_symlink() and needle.encode() in p.read_bytes()
        ]
        assert named == [], f"{needle} is named in {named[:5]}"
    # Compiled ahead (the daemon cannot write /opt), for the final source paths.
    pyc = next((venv / "lib").glob("python3*/site-packages/agent/__pycache__/cli.*.pyc"))
    with pyc.open("rb") as f:
        f.read(16)
        code = marshal.load(f)  # noqa: S302 - our own build output
    assert code.co_filename.startswith("/opt/homehub/.venv/lib/python3")
    assert code.co_filename.endswith("/site-packages/agent/cli.py")


@pytest.mark.slow
def test_installed_command_runs_and_carries_the_version(installed: Path) -> None:
    helped = run_installed(installed, "--help")
    assert helped.returncode == 0, helped.stderr
    assert "check-config" in helped.stdout
    config = installed / "etc/homehub/homehub.toml"
    checked = run_installed(installed, "check-config", str(config))
    assert (checked.returncode, checked.stdout) == (0, f"{config}: ok (1 device(s))\n")
    probe = subprocess.run(
        [
            str(installed / VENV / "bin/python"),
            "-c",
            "import importlib.metadata as m, agent; print(m.version('homehub')); "
            "print(agent.__file__)",
        ],
        cwd=installed,
        capture_output=True,
        text=True,
        check=True,
    )
    version, module = probe.stdout.splitlines()
    assert version == VERSION  # what `homehub status` shows
    assert Path(module).is_relative_to(installed / VENV)
    assert not list((installed / VENV).glob("lib/python3*/site-packages/*.egg-link"))


@pytest.mark.slow
def test_second_install_changes_nothing_and_keeps_the_technicians_config(
    installed: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(installed, root, symlinks=True)
    config = root / "etc/homehub/homehub.toml"
    config.write_text(config.read_text().replace('id = "hub-0001"', 'id = "hub-0420"'))
    before = snapshot(root)
    out = make("install", f"DESTDIR={root}")
    assert "/opt/homehub/.venv is up to date" in out
    assert "installed " not in out
    assert snapshot(root) == before


@pytest.mark.slow
def test_uninstall_removes_what_install_put_and_keeps_config_and_data(
    installed: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(installed, root, symlinks=True)
    outbox = root / "var/lib/homehub/outbox.db"
    outbox.parent.mkdir(parents=True)
    outbox.write_bytes(b"unsent readings")
    make("uninstall", f"DESTDIR={root}")
    for relative in EXPECTED_FILES:
        if not relative.startswith("etc/"):
            assert not (root / relative).exists(), relative
    assert not (root / "usr/bin/homehub").is_symlink()
    assert not (root / "opt/homehub").exists()
    assert not (root / "usr/share/doc/homehub").exists()
    assert (root / "etc/homehub/homehub.toml").is_file()
    assert outbox.read_bytes() == b"unsent readings"
    again = make("uninstall", f"DESTDIR={root}")
    assert "removed" not in again
    make("uninstall", f"DESTDIR={root}", "PURGE=yes")
    assert not (root / "etc/homehub").exists()
    assert not (root / "var/lib/homehub").exists()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="sysusers and tmpfiles chown: root only")
def test_sysusers_and_tmpfiles_make_the_user_and_private_directories(
    installed: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(installed, root, symlinks=True)
    subprocess.run(["systemd-sysusers", f"--root={root}"], check=True, capture_output=True)
    passwd = (root / "etc/passwd").read_text().splitlines()
    user = next(line.split(":") for line in passwd if line.startswith("homehub:"))
    uid, gid, home, shell = int(user[2]), int(user[3]), user[5], user[6]
    assert (home, shell) == ("/var/lib/homehub", "/usr/sbin/nologin")
    assert uid < 1000  # a system user
    subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create"], check=True)
    expected = {
        "etc/homehub": (0o750, 0, gid),
        "etc/homehub/keys": (0o700, uid, gid),
        "etc/homehub/tls": (0o750, 0, gid),
        "etc/homehub/homehub.toml": (0o640, 0, gid),
    }
    for relative, (mode, owner, group) in expected.items():
        st = (root / relative).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, owner, group), relative


@pytest.mark.slow
def test_installed_unit_rated_at_most_1_5(installed: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--root={installed}", "homehub.service"],
        capture_output=True,
        text=True,
        check=True,
    )
    level = re.search(r"Overall exposure level for homehub\.service: (\d+\.\d)", done.stdout)
    assert level is not None, done.stdout[-500:]
    assert float(level.group(1)) <= 1.5


def test_unit_has_no_directive_systemd_does_not_know(tmp_path: Path) -> None:
    """`systemd-analyze verify` warns (and carries on) on a misspelt or unknown directive,
    which the security rating silently ignores. The ExecStart= binary must exist for verify:
    a copy points it at /bin/true, nothing else changed."""
    unit = (REPO / "systemd/homehub.service").read_text()
    copy = tmp_path / "homehub.service"
    copy.write_text(re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/bin/true", unit, count=1))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stderr) == (0, "")
    copy.write_text(copy.read_text().replace("NoNewPrivileges=", "NoNewPrivilege=", 1))
    misspelt = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert "Unknown key 'NoNewPrivilege'" in misspelt.stderr


def test_unit_credential_is_optional_and_restart_policy_stated() -> None:
    """The KEK credential is named without a path: systemd skips it when absent, where an
    absolute path would fail every start of a hub that keeps its KEK elsewhere."""
    unit = (REPO / "systemd/homehub.service").read_text().splitlines()
    settings = [line for line in unit if line and not line.startswith("#")]
    assert "LoadCredentialEncrypted=homehub-kek" in settings
    assert "Restart=always" in settings
    # Exit status 2 (LocalError) includes passing conditions: never exempt from restarts.
    assert not [s for s in settings if s.startswith("RestartPreventExitStatus=")]
    assert "ConfigurationDirectory=homehub" in settings
    assert "Type=notify" in settings
    assert any(s.startswith("WatchdogSec=") for s in settings)


def _dbus_daemon_address(policy: Path, directory: Path) -> str:
    """The address a dbus-daemon including ``policy`` prints, or "" if it refused to start."""
    config = directory / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=directory / "bus", policy=policy))
    with subprocess.Popen(
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as process:
        assert process.stdout is not None
        address = process.stdout.readline().decode().strip()
        process.terminate()
        process.wait(timeout=10)
    return address


def test_dbus_policy_is_accepted_by_dbus_daemon(tmp_path: Path) -> None:
    policy = REPO / "systemd/homehub.dbus.conf"
    assert _dbus_daemon_address(policy, tmp_path).startswith("unix:path=")
    # The same daemon refuses a policy it cannot parse: the check above can fail.
    broken = tmp_path / "broken.conf"
    broken.write_text(policy.read_text().replace("send_destination", "send_destinaton", 1))
    assert _dbus_daemon_address(broken, tmp_path) == ""


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """`make deb` into a directory of its own: the .deb, its SBOM and the staged tree."""
    out = tmp_path_factory.mktemp("deb")
    deb, sbom, stage = out / "homehub.deb", out / "homehub.cdx.json", out / "stage"
    # Fast gzip: the test inspects the package, not xz's ratio (xz takes ~25 s more here).
    make("deb", f"DEB={deb}", f"SBOM={sbom}", f"STAGE={stage}", "DEB_COMPRESS=-Zgzip -z1")
    return deb, sbom, stage


def _dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
def test_deb_control_names_version_arch_and_interpreter(package: tuple[Path, Path, Path]) -> None:
    deb = package[0]
    fields = dict(
        line.split(": ", 1)
        for line in _dpkg_deb("--field", str(deb)).splitlines()
        if not line.startswith(" ")
    )
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    python = Path(os.path.realpath("/usr/bin/python3")).name
    assert fields["Package"] == "homehub"
    assert fields["Version"] == VERSION
    assert fields["Architecture"] == arch
    assert python in [d.strip() for d in fields["Depends"].split(",")]
    info = _dpkg_deb("--info", str(deb))
    for script in ("postinst", "prerm", "postrm"):
        assert re.search(rf"\s\*\s+{script}\s+#!/bin/sh", info), script
    assert "conffiles" not in info


@pytest.mark.slow
def test_deb_contents_are_the_install_tree_owned_by_root(package: tuple[Path, Path, Path]) -> None:
    listing = _dpkg_deb("--contents", str(package[0])).splitlines()
    entries: dict[str, tuple[str, str]] = {}
    for line in listing:
        perms, owner, _size, _date, _time, name, *rest = line.split()
        entries[name.removeprefix("./").rstrip("/")] = (perms, " ".join(rest))
        assert owner == "root/root", line
    for relative, mode in EXPECTED_FILES.items():
        if relative.startswith("etc/"):
            # Created by postinst when absent: never a conffile (unattended upgrades).
            assert relative not in entries
            continue
        perms = entries[relative][0]
        assert perms == stat.filemode(stat.S_IFREG | mode), relative
    assert entries["usr/bin/homehub"] == ("lrwxrwxrwx", "-> /opt/homehub/.venv/bin/homehub")
    assert "usr/share/doc/homehub/sbom.cdx.json" in entries
    assert not [name for name in entries if name.startswith("etc")]
    assert not [name for name in entries if "/site-packages/pip/" in name]


def test_maintainer_scripts_parse() -> None:
    for script in ("postinst", "prerm", "postrm"):
        path = REPO / "packaging/debian" / script
        assert os.access(path, os.X_OK), script
        subprocess.run(["sh", "-n", str(path)], check=True)


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, _, version = line.strip().partition("==")
        if version:
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


@pytest.mark.slow
def test_sbom_validates_and_lists_every_shipped_pin(package: tuple[Path, Path, Path]) -> None:
    _deb, sbom, stage = package
    document = json.loads(sbom.read_text())
    assert document["bomFormat"] == "CycloneDX"
    assert document["specVersion"] == "1.6"
    assert document["metadata"]["component"]["name"] == "homehub"
    assert document["metadata"]["component"]["version"] == VERSION
    listed = {
        re.sub(r"[-_.]+", "-", c["name"]).lower(): c["version"] for c in document["components"]
    }
    pins = _pins()
    direct = [
        re.sub(r"[-_.]+", "-", d.split("==")[0]).lower()
        for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    ]
    for name in direct:
        assert listed.get(name) == pins[name], name
    # Every component is a pin, at its pinned version; the dev tools are not shipped.
    assert {name: pins.get(name) for name in listed} == listed
    for dev_only in ("pytest", "mypy", "ruff", "hypothesis", "pycose"):
        assert dev_only not in listed
    # The SBOM the package carries is this one.
    extracted = stage.parent / "extracted"
    subprocess.run(["dpkg-deb", "-x", str(package[0]), str(extracted)], check=True)
    assert (extracted / "usr/share/doc/homehub/sbom.cdx.json").read_bytes() == sbom.read_bytes()


@pytest.mark.slow
def test_sbom_check_refuses_a_missing_component_and_an_invalid_document(
    package: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _deb, sbom, stage = package
    tool = next((REPO / ".cache").glob("cyclonedx-*/bin/python"))
    document = json.loads(sbom.read_text())

    def check(doc: object) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "sbom.json"
        path.write_text(json.dumps(doc))
        return subprocess.run(
            [
                str(tool),
                str(REPO / "packaging/sbom_check.py"),
                str(path),
                "--python",
                str(stage / VENV / "bin/python"),
                "--constraints",
                str(REPO / "constraints.txt"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    # One run with two faults (a run costs ~3 s: the strict schema validator): one component
    # gone, another carrying a property the schema does not know.
    dropped = document["components"].pop()
    document["components"][0]["unknownField"] = 1
    refused = check(document)
    assert refused.returncode == 1
    assert "not valid CycloneDX 1.6" in refused.stderr
    name = re.sub(r"[-_.]+", "-", dropped["name"]).lower()
    assert f"{name} {dropped['version']} is installed but the SBOM lists None" in refused.stderr


def sandboxed(mode: str, what: Path, scratch: Path) -> dict[str, str]:
    """tests/deb_sandbox.sh in a mount namespace of its own: the facts it printed."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare (util-linux)")
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:  # a container without CAP_SYS_ADMIN
        pytest.skip(f"no mount namespace here: {probe.stderr.strip()}")
    sandbox = REPO / "tests/deb_sandbox.sh"
    namespace = ["unshare", "--mount", "--propagation", "private"]
    done = subprocess.run(
        [*namespace, str(sandbox), mode, str(what), str(scratch)],
        capture_output=True,
        text=True,
        timeout=MAKE_TIMEOUT_S,
        check=False,
    )
    phi_canaries.record_output(f"sandbox {mode}", done.stdout + done.stderr)
    if done.returncode == 77:
        pytest.skip(done.stderr.strip())
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(line.split(": ", 1) for line in done.stdout.splitlines())


USER_LINE: Final = "homehub:/var/lib/homehub:/usr/sbin/nologin"
INSTALLED_FACTS: Final = {
    "/etc/homehub": "750 root homehub",
    "/etc/homehub/keys": "700 homehub homehub",
    "/etc/homehub/tls": "750 root homehub",
    "/etc/homehub/homehub.toml": "640 root homehub",
    "/opt/homehub/.venv/bin/homehub": "755 root root",
    "user": USER_LINE,
    "version": VERSION,
    "check-config": "/etc/homehub/homehub.toml: ok (1 device(s))",
}


def assert_lifecycle(facts: dict[str, str]) -> None:
    """Installed with the user and private directories; the technician's config kept by a
    reinstall; remove keeps configuration, keys, unsent readings and the user; purge removes
    configuration and data but keeps the user (no later user inherits its uid)."""
    assert {k: facts[f"installed {k}"] for k in INSTALLED_FACTS} == INSTALLED_FACTS
    assert facts["upgraded config kept"] == "# provisioned"
    assert facts["removed /opt/homehub/.venv/bin/homehub"] == "absent"
    assert facts["removed /etc/homehub/homehub.toml"] == "640 root homehub"
    assert facts["removed /etc/homehub/keys"] == "700 homehub homehub"
    assert facts["removed /var/lib/homehub/outbox.db"] != "absent"
    for path in ("/etc/homehub", "/var/lib/homehub/outbox.db"):
        assert facts[f"purged {path}"] == "absent"
    assert facts["purged user"] == USER_LINE


@pytest.mark.slow
def test_deb_installs_upgrades_removes_and_purges_with_its_maintainer_scripts(
    package: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The real dpkg and maintainer scripts, in a mount namespace whose /etc, /usr, /opt and
    /var are throwaway overlays (tests/deb_sandbox.sh): the machine itself is not changed."""
    facts = sandboxed("deb", package[0], tmp_path)
    assert_lifecycle(facts)
    assert facts["installed enabled"] == "/lib/systemd/system/homehub.service"
    assert facts["installed status"] == f"ii {VERSION}"
    assert facts["removed status"] == f"rc {VERSION}"
    assert facts["purged enabled"] == "no"
    assert facts["purged status"] == "none"


@pytest.mark.slow
def test_make_install_into_the_live_root_makes_user_and_directories(tmp_path: Path) -> None:
    """`make install` into / as root (sysusers, tmpfiles), in the same sandbox; it leaves the
    unit disabled (the package enables it)."""
    facts = sandboxed("make", REPO, tmp_path)
    assert_lifecycle(facts)
    assert facts["installed enabled"] == "no"
