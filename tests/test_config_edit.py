"""agent/config_edit.py: allow-list edits keep the file's comments, layout and mode, and are
refused whole (nothing written) when anything is wrong."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path
from typing import Final

import pytest

from agent.config_edit import (
    ConfigEditError,
    NewDevice,
    add_device,
    remove_device,
    rename_device,
    unique_label,
)
from agent.errors import ConfigError
from tests.example_config import EXAMPLE

PIN: Final = "sha256:" + "ab" * 32
METER: Final = NewDevice("glucose", "f0:00:00:00:20:01", "glucose", identity=PIN)


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """The shipped example configuration (one cuff, many comments), mode 0640."""
    path = tmp_path / "homehub.toml"
    path.write_text(EXAMPLE.read_text())
    path.chmod(0o640)
    return path


def comments(text: str) -> list[str]:
    """Every comment line of ``text``, in order."""
    return [line for line in text.splitlines() if line.lstrip().startswith("#")]


class TestAdd:
    """add_device."""

    def test_appends_a_table_and_keeps_every_comment_and_the_mode(self, example: Path) -> None:
        """The new [[devices]] table follows the cuff's; every comment is still there."""
        before = example.read_text()
        added = add_device(example, METER)
        after = example.read_text()
        assert ("glucose", "F0:00:00:00:20:01", "required", PIN) == (
            added.kind,
            added.address,
            added.pairing_mode,
            added.identity,
        )
        assert comments(before) == comments(after)
        assert after.startswith(before[: before.index("[outbox]")].rstrip("\n"))
        assert ["cuff", "glucose"] == [d["label"] for d in tomllib.loads(after)["devices"]]
        assert 0o640 == stat.S_IMODE(example.stat().st_mode)

    def test_first_device_in_a_file_without_any(self, tmp_path: Path, example: Path) -> None:
        """A file with no [[devices]] gets its first one."""
        text = example.read_text()
        start = text.index("[[devices]]")
        end = text.index("[outbox]")
        example.write_text(text[:start] + text[end:])
        add_device(example, METER)
        assert ["glucose"] == [d["label"] for d in tomllib.loads(example.read_text())["devices"]]

    @pytest.mark.parametrize(
        ("new", "message"),
        [
            (NewDevice("glucose", "F0:00:00:00:20:01", "cuff"), "'cuff' is already used"),
            (NewDevice("glucose", "F0:00:00:00:10:01", "meter"), "already on the list as 'cuff'"),
            (NewDevice("glucose", "F0:00:00:00:20:01", "Meter!"), "is not a label"),
        ],
    )
    def test_refusals_write_nothing(self, example: Path, new: NewDevice, message: str) -> None:
        """A taken label or address, or a bad label: ConfigError, file unchanged."""
        before = example.read_bytes()
        with pytest.raises(ConfigEditError, match=message):
            add_device(example, new)
        assert before == example.read_bytes()

    def test_an_invalid_file_is_not_edited(self, example: Path) -> None:
        """A file the daemon would refuse is refused here too, untouched."""
        example.write_text(example.read_text().replace('id = "hub-0001"', 'id = "Hub 1"'))
        before = example.read_bytes()
        with pytest.raises(ConfigError, match=r"hub\.id"):
            add_device(example, METER)
        assert before == example.read_bytes()


class TestRenameRemove:
    """rename_device, remove_device."""

    def test_rename_changes_only_the_label(self, example: Path) -> None:
        """Only the label's line changes."""
        before = example.read_text()
        rename_device(example, "cuff", "arm-cuff")
        assert before.replace('label = "cuff"', 'label = "arm-cuff"') == example.read_text()

    def test_removing_the_first_device_keeps_the_file_comments(self, example: Path) -> None:
        """The cuff's trailing comments (the commented examples) move to the device left."""
        add_device(example, METER)
        before = comments(example.read_text())
        removed = remove_device(example, "cuff")
        after = example.read_text()
        assert "F0:00:00:00:10:01" == removed.address
        assert sorted(before) == sorted(comments(after))
        assert ["glucose"] == [d["label"] for d in tomllib.loads(after)["devices"]]

    def test_remove_the_only_device_then_add_one(self, example: Path) -> None:
        """An allow-list emptied is written without any [[devices]] (not ``devices = []``)
        and takes a new device again."""
        remove_device(example, "cuff")
        text = example.read_text()
        assert "devices" not in tomllib.loads(text)
        assert "[outbox]" in text
        add_device(example, METER)
        assert ["glucose"] == [d["label"] for d in tomllib.loads(example.read_text())["devices"]]

    def test_an_empty_list_written_by_hand(self, example: Path) -> None:
        """``devices = []`` in the file is replaced by the first table."""
        text = example.read_text()
        start, end = text.index("[[devices]]"), text.index("[outbox]")
        example.write_text("devices = []\n" + text[:start] + text[end:])
        add_device(example, METER)
        assert ["glucose"] == [d["label"] for d in tomllib.loads(example.read_text())["devices"]]

    def test_unknown_label(self, example: Path) -> None:
        """An unknown label names the known ones; nothing written."""
        before = example.read_bytes()
        with pytest.raises(ConfigEditError, match=r"no device labelled 'x' \(known: cuff\)"):
            remove_device(example, "x")
        assert before == example.read_bytes()


def test_unique_label() -> None:
    """The kind's name, then -2, -3 …"""
    assert ["glucose", "glucose-2", "glucose-3"] == [
        unique_label("glucose", set()),
        unique_label("glucose", {"glucose"}),
        unique_label("glucose", {"glucose", "glucose-2"}),
    ]
