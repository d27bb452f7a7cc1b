"""The replay memory of commands (agent/command_nonces.py): until exp, bounded, durable.

The wall clock is the named mock edge (tests.test_commands.FakeWallClock); a restart is a
new NonceFile reading the same path.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import structlog

from agent.command_nonces import (
    MAX_NONCES,
    MAX_SKEW_S,
    Admission,
    NonceFile,
    NonceMemory,
)
from agent.errors import StorageError
from tests.test_commands import NOW, FakeWallClock

A, B, C = b"a" * 16, b"b" * 16, b"c" * 16


class TestMemory:
    def test_admit_once_until_exp(self) -> None:
        memory = NonceMemory()
        assert memory.admit(A, issued_at_s=NOW, expires_at_s=NOW + 10, now_s=NOW) is (
            Admission.ADMITTED
        )
        assert memory.admit(A, issued_at_s=NOW, expires_at_s=NOW + 10, now_s=NOW + 10) is (
            Admission.REPLAYED
        )
        # Past its exp a command is refused as expired anyway; the memory lets it go.
        assert memory.prune(NOW + 11) == 1
        assert (len(memory), A in memory) == (0, False)

    def test_full_refuses_and_forgets_nothing_unexpired(self) -> None:
        memory = NonceMemory(max_nonces=2)
        for nonce, exp in ((A, NOW + 10), (B, NOW + 20)):
            assert memory.admit(nonce, issued_at_s=NOW, expires_at_s=exp, now_s=NOW) is (
                Admission.ADMITTED
            )
        assert memory.admit(C, issued_at_s=NOW, expires_at_s=NOW + 5, now_s=NOW + 10) is (
            Admission.FULL
        )
        assert (A in memory, B in memory, C in memory) == (True, True, False)
        assert memory.admit(C, issued_at_s=NOW, expires_at_s=NOW + 30, now_s=NOW + 11) is (
            Admission.ADMITTED
        )
        assert (A in memory, B in memory, C in memory) == (False, True, True)

    def test_floor(self) -> None:
        memory = NonceMemory(floor_s=NOW)
        assert memory.admit(A, issued_at_s=NOW, expires_at_s=NOW + 9, now_s=NOW) is (
            Admission.REPLAYED
        )
        assert memory.admit(A, issued_at_s=NOW + 1, expires_at_s=NOW + 9, now_s=NOW) is (
            Admission.ADMITTED
        )

    def test_bytes_round_trip(self) -> None:
        memory = NonceMemory(floor_s=7)
        memory.admit(B, issued_at_s=NOW, expires_at_s=NOW + 20, now_s=NOW)
        memory.admit(A, issued_at_s=NOW, expires_at_s=NOW + 10, now_s=NOW)
        data = memory.to_bytes()
        assert data == b"HHN1" + (7).to_bytes(8, "big") + A + (NOW + 10).to_bytes(8, "big") + (
            B + (NOW + 20).to_bytes(8, "big")
        )
        again = NonceMemory.from_bytes(data)
        assert (again.floor_s, again.to_bytes()) == (7, data)

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (b"", "not a nonce file"),
            (b"HHN2" + bytes(8), "not a nonce file"),
            (b"HHN1" + bytes(8) + bytes(23), "truncated"),
            (b"HHN1" + bytes(8) + (A + bytes(8)) * 2, "a nonce twice"),
            (b"HHN1" + bytes(8) + A + bytes(8) + B + bytes(8), "more nonces than the bound"),
        ],
    )
    def test_damaged_bytes(self, data: bytes, reason: str) -> None:
        with pytest.raises(ValueError, match=reason):
            NonceMemory.from_bytes(data, max_nonces=1 if "bound" in reason else 4)

    def test_the_bound_covers_an_hour_of_commands(self) -> None:
        """1,024 nonces held at most 80 min each: about one command every 5 s, sustained."""
        assert MAX_NONCES == 1024


class TestFile:
    def test_survives_a_restart(self, tmp_path: Path) -> None:
        clock = FakeWallClock()
        path = tmp_path / "command_nonces"
        first = NonceFile(path, clock)
        assert first.admit(A, issued_at_s=NOW, expires_at_s=NOW + 3600) is Admission.ADMITTED
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        clock.now = NOW + 3600
        restarted = NonceFile(path, clock)
        assert restarted.admit(A, issued_at_s=NOW, expires_at_s=NOW + 3600) is (Admission.REPLAYED)
        assert restarted.admit(B, issued_at_s=NOW, expires_at_s=NOW + 3600) is (Admission.ADMITTED)
        clock.now = NOW + 3601
        assert NonceFile(path, clock).memory.prune(NOW + 3601) == 2

    def test_refused_admission_writes_nothing(self, tmp_path: Path) -> None:
        path = tmp_path / "command_nonces"
        nonces = NonceFile(path, FakeWallClock())
        nonces.admit(A, issued_at_s=NOW, expires_at_s=NOW + 60)
        before = path.read_bytes()
        assert nonces.admit(A, issued_at_s=NOW, expires_at_s=NOW + 60) is Admission.REPLAYED
        assert path.read_bytes() == before

    @pytest.mark.parametrize("damage", ["garbage", "mode"])
    def test_lost_file_refuses_what_it_may_have_held(self, tmp_path: Path, damage: str) -> None:
        """A damaged (or group-readable) file is not taken as empty: commands issued up to
        load + MAX_SKEW_S are refused as replayed, later ones pass."""
        clock = FakeWallClock()
        path = tmp_path / "command_nonces"
        NonceFile(path, clock).admit(A, issued_at_s=NOW, expires_at_s=NOW + 600)
        if damage == "garbage":
            path.write_bytes(b"garbage")
        else:
            path.chmod(0o644)
        clock.now = NOW + 10
        with structlog.testing.capture_logs() as logs:
            reloaded = NonceFile(path, clock)
        assert [(e["event"], e["refused_until_iat_s"]) for e in logs] == [
            ("command_nonces_lost", NOW + 10 + MAX_SKEW_S)
        ]
        assert reloaded.admit(A, issued_at_s=NOW, expires_at_s=NOW + 600) is Admission.REPLAYED
        floor = NOW + 10 + MAX_SKEW_S
        assert reloaded.admit(B, issued_at_s=floor, expires_at_s=floor + 600) is (
            Admission.REPLAYED
        )
        assert reloaded.admit(B, issued_at_s=floor + 1, expires_at_s=floor + 600) is (
            Admission.ADMITTED
        )
        # The floor is kept in the file it writes back.
        assert NonceFile(path, clock).memory.floor_s == floor
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_unwritable_admits_nothing(self, tmp_path: Path) -> None:
        nonces = NonceFile(tmp_path / "missing-dir" / "command_nonces", FakeWallClock())
        with pytest.raises(StorageError) as caught:
            nonces.admit(A, issued_at_s=NOW, expires_at_s=NOW + 60)
        assert (caught.value.operation, A in nonces.memory) == ("remember_nonce", False)
        assert caught.value.reason.startswith("cannot be written")
