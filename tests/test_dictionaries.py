"""The shipped zstd dictionaries: listed, checked on load, reproducible from synthetic data."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import zstandard

from agent import dictionaries
from agent.errors import IntegrityError
from hil import train_dictionaries


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "dicts"
    shutil.copytree(dictionaries.PACKAGE_DIR, target, ignore=shutil.ignore_patterns("*.py*"))
    return target


def test_shipped_dictionaries_one_and_two() -> None:
    """1 for version-1 readings, 2 for version 2 (without derived identifiers), 3 for version 3
    (Devices by reference)."""
    loaded = dictionaries.load()
    assert [1, 2, 3] == sorted(loaded)
    for did, dictionary in loaded.items():
        assert ("blood_pressure", "glucose", "pulse_oximetry") == dictionary.kinds
        assert did == zstandard.ZstdCompressionDict(dictionary.data).dict_id()
        assert hashlib.sha256(dictionary.data).hexdigest() == dictionary.sha256_hex
        assert 64 * 1024 == len(dictionary.data)
        assert did == dictionary.reading_version


def test_reading_version_must_be_1_2_or_3(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["dictionaries"][1]["reading_version"] = 4
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="entry 2: reading_version is not 1, 2 or 3"):
        dictionaries.load(directory)


def test_altered_file_is_refused(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    data = bytearray((directory / "1.zdict").read_bytes())
    data[5000] ^= 1
    (directory / "1.zdict").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256 does not match the manifest"):
        dictionaries.load(directory)


def test_oversized_file_is_not_read_past_the_bound(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    (directory / "1.zdict").write_bytes(b"\0" * (dictionaries.MAX_DICTIONARY_BYTES + 1))
    with pytest.raises(IntegrityError, match="larger than 262144 bytes"):
        dictionaries.load(directory)


def test_zstd_id_must_be_our_id(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    data = (directory / "1.zdict").read_bytes()
    (directory / "9.zdict").write_bytes(data)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["dictionaries"].append(
        {"id": 9, "file": "9.zdict", "sha256": hashlib.sha256(data).hexdigest(), "kinds": []}
    )
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="its zstd dictionary id is 1"):
        dictionaries.load(directory)


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        (b"{", "not JSON"),
        (b'{"v": 2, "dictionaries": []}', "not a version 1 manifest"),
        (b'{"v": 1, "dictionaries": [{"id": 0}]}', "id is not an integer"),
        (b'{"v": 1, "dictionaries": [{"id": 1, "sha256": "ab"}]}', "64 lower-case hex"),
        (
            b'{"v": 1, "dictionaries": [{"id": 1, "file": "../x", "sha256": "'
            + b"a" * 64
            + b'"}]}',
            "file must be named 1.zdict",
        ),
        (
            b'{"v": 1, "dictionaries": [{"id": 1, "sha256": "' + b"a" * 64 + b'"},'
            b' {"id": 1, "sha256": "' + b"a" * 64 + b'"}]}',
            "id 1 listed twice",
        ),
    ],
)
def test_bad_manifest(manifest: bytes, reason: str) -> None:
    with pytest.raises(IntegrityError, match=reason):
        dictionaries.parse_manifest(manifest)


def test_training_reproduces_the_shipped_file() -> None:
    """hil/train_dictionaries.py, run again, makes exactly the shipped bytes."""
    assert 0 == train_dictionaries.main(["--check"])
