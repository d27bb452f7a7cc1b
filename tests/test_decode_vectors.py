"""Golden vectors and properties of drivers.registry, the decoder behind ``homehub decode``.

Every vector of ``/work/shared/reference/ble-test-vectors.json`` is checked against
``registry.decode``: valid vectors must match ``expected`` (numbers within 1e-9
relative, extra keys allowed), invalid ones must raise DecodeError and nothing else.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import DecodeError, UsageError
from drivers import registry

VECTORS_PATH = (
    Path(__file__).resolve().parents[2] / "shared" / "reference" / "ble-test-vectors.json"
)


def _load_vectors() -> list[Any]:
    if not VECTORS_PATH.is_file():
        return [
            pytest.param(
                None, marks=pytest.mark.skip(reason=f"reference vectors absent: {VECTORS_PATH}")
            )
        ]
    vectors = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    return [
        pytest.param(v, id=f"{i:02d} {v['characteristic']} {v['name']} [{v['hex']}]")
        for i, v in enumerate(vectors)
    ]


VECTORS = _load_vectors()


def assert_matches(expected: Any, actual: Any, path: str = "$") -> None:
    """Assert ``actual`` holds ``expected``: same values, numbers within 1e-9 relative.

    Extra keys in ``actual`` objects are allowed. An expected numeric *string*
    (the vector file writes 3.7e129 as ``"3.7e129"``) matches a number of that value.
    """
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{path}: key {key!r} missing"
            assert_matches(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: expected a list, got {actual!r}"
        assert len(expected) == len(actual), f"{path}: list length"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_matches(e, a, f"{path}[{i}]")
    elif expected is None or isinstance(expected, bool):
        assert expected is actual, f"{path}: expected {expected!r}, got {actual!r}"
    elif isinstance(expected, int | float) or (
        isinstance(expected, str) and isinstance(actual, int | float) and _is_number(expected)
    ):
        assert isinstance(actual, int | float), f"{path}: expected a number, got {actual!r}"
        assert not isinstance(actual, bool), f"{path}: expected a number, got a bool"
        assert math.isclose(float(expected), actual, rel_tol=1e-9), (
            f"{path}: expected {expected!r}, got {actual!r}"
        )
    else:
        assert expected == actual, f"{path}: expected {expected!r}, got {actual!r}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("vector", VECTORS)
def test_vector(vector: dict[str, Any]) -> None:
    """The registry decodes each reference vector to its expected fields, or rejects it."""
    characteristic = registry.parse_characteristic(vector["characteristic"])
    from_hub = vector["direction"] == "write"
    data = bytes.fromhex(vector["hex"])
    expected = vector["expected"]
    if isinstance(expected, dict) and expected.get("valid") is False:
        with pytest.raises(DecodeError) as info:
            registry.decode(characteristic, data, from_hub=from_hub)
        assert characteristic == info.value.characteristic
        assert info.value.reason
    else:
        assert_matches(expected, registry.decode(characteristic, data, from_hub=from_hub))


def test_every_vector_characteristic_is_supported() -> None:
    """Each characteristic named in the vector file is in the registry."""
    if not VECTORS_PATH.is_file():
        pytest.skip(f"reference vectors absent: {VECTORS_PATH}")
    names = {v["characteristic"] for v in json.loads(VECTORS_PATH.read_text(encoding="utf-8"))}
    for name in sorted(names):
        registry.parse_characteristic(name)


# -- every codec, random input -----------------------------------------------------------

ALL_CODECS = [
    pytest.param(codec, from_hub, id=f"{'hub' if from_hub else 'device'}-{key}")
    for from_hub, table in ((False, registry.DEVICE_CODECS), (True, registry.HUB_CODECS))
    for key, codec in table.items()
]


#: Valid values to mutate, so the fuzzing also reaches deep into framed values (RACP,
#: CGM) that random bytes almost never hit. The reference vectors are added when present.
BUILTIN_SEEDS: dict[tuple[str, bool], list[str]] = {
    ("0x2A52", False): ["05000201", "06000101", "06000c02"],
    ("0x2A52", True): ["0101", "0103010a00", "0104010a001400", "0300", "0401", "0201"],
    ("0x2AA7", False): ["0fe3d2e405000214ff02f0e5f38e3f", "06000c10050006000c100600"],
    ("0x2A35", False): ["1e010002000300040005060708090a000b2500"],
    ("0x2A18", False): ["1b0100e307021b0b0a1efbff1e00120501"],
    ("0x2A5E", False): ["0facf3bef5e8070b1d170839204022000066e3"],
    ("0x2A5F", False): ["1c5f005a00200000000057f0"],
}


def _seeds() -> dict[tuple[str, bool], list[bytes]]:
    seeds = {key: [bytes.fromhex(h) for h in hexes] for key, hexes in BUILTIN_SEEDS.items()}
    if VECTORS_PATH.is_file():
        for v in json.loads(VECTORS_PATH.read_text(encoding="utf-8")):
            expected = v["expected"]
            if isinstance(expected, dict) and expected.get("valid") is False:
                continue
            key = (registry.parse_characteristic(v["characteristic"]), v["direction"] == "write")
            seeds.setdefault(key, []).append(bytes.fromhex(v["hex"]))
    return seeds


SEEDS = _seeds()


@st.composite
def _mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with up to three edits: cut, append, overwrite or drop an octet."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(st.sampled_from(["cut", "append", "overwrite", "drop"]))
        if edit == "cut":
            del data[draw(st.integers(0, len(data))) :]
        elif edit == "append":
            data += draw(st.binary(min_size=1, max_size=4))
        elif data and edit == "overwrite":
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif data:
            del data[draw(st.integers(0, len(data) - 1))]
    return bytes(data)


@pytest.mark.parametrize(("codec", "from_hub"), ALL_CODECS)
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_bytes_decode_or_raise(
    codec: registry.Codec[Any], from_hub: bool, data: st.DataObject
) -> None:
    """Random or mutated bytes either decode to a record that re-encodes to exactly them,
    or raise DecodeError naming the characteristic; the JSON form never holds NaN/Inf."""
    seeds = SEEDS.get((codec.characteristic, from_hub))
    strategy = st.binary(max_size=48)
    if seeds:
        strategy = st.one_of(strategy, _mutated(seeds))
    value = data.draw(strategy)
    error: DecodeError | None = None
    try:
        record = codec.parse(value)
    except DecodeError as exc:
        error = exc
    if error is not None:
        assert codec.characteristic == error.characteristic
        return
    assert value == bytes(record)
    json.dumps(codec.render(record), allow_nan=False)


# -- registry API -----------------------------------------------------------------------


class TestParseCharacteristic:
    """Spellings accepted for a characteristic."""

    @pytest.mark.parametrize(
        "name",
        ["0x2A35", "2a35", "2A35", "0X2a35", " 2a35 ", "00002a35-0000-1000-8000-00805f9b34fb"],
    )
    def test_spellings(self, name: str) -> None:
        """UUID spellings canonicalise to 0x2A35."""
        assert registry.parse_characteristic(name) == "0x2A35"

    @pytest.mark.parametrize(("name", "canonical"), [("sfloat", "SFLOAT"), ("FLOAT", "FLOAT")])
    def test_number_formats(self, name: str, canonical: str) -> None:
        """The bare number formats are accepted in any case."""
        assert canonical == registry.parse_characteristic(name)

    @pytest.mark.parametrize("name", ["", "2a3", "0x2A35x", "blood", "12345"])
    def test_malformed(self, name: str) -> None:
        """Malformed names raise UsageError on 'characteristic'."""
        with pytest.raises(UsageError) as info:
            registry.parse_characteristic(name)
        assert info.value.argument == "characteristic"

    def test_unknown(self) -> None:
        """A well-formed but unsupported UUID raises UsageError naming it."""
        with pytest.raises(UsageError, match="0x1234 is not supported"):
            registry.parse_characteristic("1234")


class TestParseHex:
    """Hex text accepted by ``homehub decode``."""

    @pytest.mark.parametrize("text", ["067d00", "06 7D 00", "06:7d:00", "0x067D00", "06-7d-00\n"])
    def test_spellings(self, text: str) -> None:
        """Separators and a 0x prefix are ignored."""
        assert registry.parse_hex(text) == b"\x06\x7d\x00"

    def test_empty(self) -> None:
        """Empty text is an empty value (the decoder then rejects it)."""
        assert registry.parse_hex("") == b""

    @pytest.mark.parametrize(
        ("text", "reason"),
        [("067", "odd number"), ("zz", "not a hex digit"), ("00" * 513, "longer than 512")],
    )
    def test_rejected(self, text: str, reason: str) -> None:
        """Bad hex raises UsageError on 'hex' with the reason."""
        with pytest.raises(UsageError, match=reason) as info:
            registry.parse_hex(text)
        assert info.value.argument == "hex"


class TestDecode:
    """registry.decode errors and directions."""

    def test_invalid_value_is_decode_error(self) -> None:
        """A truncated BPM raises DecodeError naming 0x2A35."""
        with pytest.raises(DecodeError) as info:
            registry.decode("2a35", b"\x00")
        assert info.value.characteristic == "0x2A35"

    def test_hub_never_writes_bpm(self) -> None:
        """--from-hub on a device-only characteristic is a UsageError."""
        with pytest.raises(UsageError) as info:
            registry.decode("0x2A35", bytes(7), from_hub=True)
        assert info.value.argument == "--from-hub"

    def test_current_time_from_hub(self) -> None:
        """The hub writes Current Time in the device's format."""
        out = registry.decode("0x2A2B", bytes.fromhex("e8070b1d170839050000"), from_hub=True)
        assert isinstance(out, dict)
        assert (out["year"], out["day_of_week"]) == (2024, 5)

    def test_special_sfloat_in_record_is_its_code(self) -> None:
        """A NaN MAP is the string "NaN" in JSON, never a number or null."""
        out = registry.decode("0x2A35", bytes.fromhex("007800500 0ff07".replace(" ", "")))
        assert isinstance(out, dict)
        assert out["mean_arterial_pressure"] == "NaN"
