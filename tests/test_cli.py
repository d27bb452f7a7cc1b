"""The ``homehub`` command: decode every reference vector, and bad input exits 2 with a reason."""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from tests import phi_canaries

VECTORS_FILE = (
    Path(__file__).resolve().parents[2] / "shared" / "reference" / "ble-test-vectors.json"
)
EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "config" / "homehub.example.toml"


def _vectors() -> list[Any]:
    if not VECTORS_FILE.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{VECTORS_FILE} not present"))]
    return [
        pytest.param(v, id=f"{v['characteristic']}-{v['name']}")
        for v in json.loads(VECTORS_FILE.read_text())
    ]


def _same(expected: Any, actual: Any) -> bool:
    """Numbers as numbers (1e-9 relative), objects by their expected keys (extra keys allowed)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _same(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(_same(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, bool) or expected is None:
        return expected == actual
    if isinstance(expected, int | float) or (
        isinstance(expected, str) and isinstance(actual, int | float)
    ):
        try:
            e, a = float(expected), float(actual)
        except (TypeError, ValueError):
            return False
        return math.isclose(e, a, rel_tol=1e-9)
    return expected == actual


@pytest.mark.parametrize("vector", _vectors())
def test_every_reference_vector_through_homehub_decode(
    vector: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """`homehub decode CHAR HEX` prints the expected JSON (exit 0) or a reason (exit 2)."""
    args = ["decode", vector["characteristic"], vector["hex"]]
    if vector["direction"] == "write":
        args.append("--from-hub")
    code = main(args)
    out, err = capsys.readouterr()
    expected = vector["expected"]
    if isinstance(expected, dict) and expected.get("valid") is False:
        assert 2 == code
        assert "" == out
        assert err.startswith(
            f"homehub: invalid {vector['characteristic'].upper().replace('0X', '0x')}"
        )
    else:
        assert 0 == code, err
        assert "" == err
        assert _same(expected, json.loads(out)), out


class TestBadInput:
    @pytest.mark.parametrize(
        ("args", "fragment"),
        [
            (["decode", "0x2A35", "zz"], "hex"),
            (["decode", "0x9999", "00"], "0x9999"),
            (["decode", "0x2A35", "0678"], "0x2A35"),
            (["frobnicate"], "invalid choice"),
            (["check-config", "/nonexistent/homehub.toml"], "not found"),
        ],
    )
    def test_bad_input_exits_2_with_a_reason(
        self, args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every kind of bad input gives exit code 2 and one reason on stderr, no traceback."""
        with pytest.raises(SystemExit) if args == ["frobnicate"] else contextlib.nullcontext():
            code = main(args)
            assert 2 == code
        _, err = capsys.readouterr()
        assert fragment in err
        assert "Traceback" not in err

    def test_check_config_accepts_the_example(self, capsys: pytest.CaptureFixture[str]) -> None:
        """check-config says ok for the shipped example."""
        assert 0 == main(["check-config", str(EXAMPLE_CONFIG)])
        assert "ok" in capsys.readouterr().out

    def test_console_script_runs(self) -> None:
        """The installed `homehub` entry point decodes a value in a real process."""
        exe = Path(sys.executable).with_name("homehub")
        result = subprocess.run(
            [str(exe), "decode", "0x2A35", "067d0055006200e707081b0e1e2d4800"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        phi_canaries.record_output("test_console_script_runs: stdout", result.stdout)
        phi_canaries.record_output("test_console_script_runs: stderr", result.stderr)
        assert 0 == result.returncode, result.stderr
        decoded = json.loads(result.stdout)
        assert (125, 85, 98, 72) == (
            decoded["systolic"],
            decoded["diastolic"],
            decoded["mean_arterial_pressure"],
            decoded["pulse_rate"],
        )


def test_run_refuses_a_config_with_a_wrong_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`homehub run` with a wrong key stops at once: exit 2, the key and the file named."""
    bad = tmp_path / "homehub.toml"
    bad.write_text(EXAMPLE_CONFIG.read_text().replace("port = 8883", 'port = "eighty"'))
    assert main(["run", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "mqtt.port" in err
    assert str(bad) in err


def _bad_config(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    """The example with one line changed; the path and that line's number."""
    lines = EXAMPLE_CONFIG.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(old))
    lines[at] = new
    bad = tmp_path / "homehub.toml"
    bad.write_text("\n".join(lines) + "\n")
    return bad, at + 1


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("backoff_max_s =", "backoff_max_s = inf", "mqtt.backoff_max_s"),
        ("session_timeout_s =", "session_timeout_s = inf", "ble.session_timeout_s"),
        ("keepalive_s =", "keepalive_s = 1e17", "mqtt.keepalive_s"),
        ("keepalive_s =", "keepalive_s = 100000000000000000", "mqtt.keepalive_s"),
        ("session_timeout_s =", "session_timeout_s = 44.0", "ble.session_timeout_s"),
        ("quota_bytes =", "quota_bytes = 1024", "outbox.quota_bytes"),
    ],
)
def test_out_of_range_exits_2_naming_key_file_and_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    old: str,
    new: str,
    key: str,
) -> None:
    """check-config and run refuse an unbounded value: exit 2, one line, key, file and line."""
    bad, line = _bad_config(tmp_path, old, new)
    args = (
        ["check-config", str(bad)] if command == "check-config" else ["run", "--config", str(bad)]
    )
    assert 2 == main(args)
    out, err = capsys.readouterr()
    assert "" == out
    assert 1 == err.count("\n")
    assert err.startswith(f"homehub: {bad}:{line}: key '{key}': ")


def test_config_schema_shows_every_range(capsys: pytest.CaptureFixture[str]) -> None:
    """config-schema prints each number's range beside its default."""
    assert 0 == main(["config-schema"])
    out = capsys.readouterr().out
    assert "  keepalive_s: int (default 900, 1..65535 s)  # MQTT Keep Alive" in out
    assert "  port: int (default 8883, 1..65535)" in out
    assert "  session_timeout_s: float (default 120.0, 3..3600 s)" in out
    assert "  quota_bytes: int (default 268435456, 1048576..4294967296 bytes)" in out
