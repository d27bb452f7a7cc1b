"""Train the hub's zstd dictionaries on synthetic readings made by the real pipeline.

    python -m hil.train_dictionaries            # train, write agent/dictionaries/, print sizes
    python -m hil.train_dictionaries --check    # train in memory, compare with the shipped files

Every training reading is synthetic: device bytes encoded by the emulators' independent
encoders (``hil/emulators``), with values, device times, devices (address, System ID, maker,
model, serial, firmware, clock), hubs, patients, time zones and reception times drawn from a
seeded :class:`random.Random`. Each goes through :func:`agent.ingest.prepare` and
:meth:`~agent.ingest.Prepared.envelope` (signed with a key derived from the seed) exactly as
the hub stores it, and the training sample is the payload inside that stored envelope. No
real person's data is in a dictionary: identifiers are drawn from the generator, names of
makers and models are invented.

Reproducible: the same seed and count give the same readings, and zstd's dictionary trainer
runs single-threaded with fixed parameters, so the same files come out
(``--check`` verifies it).

The measurement (printed, and asserted by tests/test_envelopes_sizes.py) uses readings drawn
with another seed (:data:`HELD_OUT_SEED`): none of them is in the training set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Final

import cbor2
import zstandard
from cryptography.hazmat.primitives.asymmetric import ec

from agent import cose, derived_ids, device_refs, dictionaries
from agent.ble.uuids import (
    BLOOD_PRESSURE_MEASUREMENT,
    GLUCOSE_MEASUREMENT,
    GLUCOSE_MEASUREMENT_CONTEXT,
    PLX_CONTINUOUS_MEASUREMENT,
    PLX_SPOT_CHECK_MEASUREMENT,
)
from agent.dictionaries import Dictionary
from agent.ingest import Signer, prepare
from agent.measurement import RawMeasurement
from agent.normalize.clock import ClockFacts
from agent.normalize.device import DeviceFacts
from agent.normalize.phd import Context
from hil.emulators.cuff import BpReading, PressureUnit
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import GlucoseContext, GlucoseRecord, Unit, mg_per_dl, mmol_per_l
from hil.emulators.oximeter import ContinuousSample, SpotCheck

if TYPE_CHECKING:
    from agent.envelopes import ReadingPayload

KINDS: Final = ("blood_pressure", "glucose", "pulse_oximetry")
"""Device kinds, each with its own generator below."""

TRAINING_SEED: Final = 20261123
HELD_OUT_SEED: Final = 777_000_001
"""Readings for measuring and tests are drawn with this seed: disjoint from the training set
(every reading's identity carries random device identifiers and values)."""

TRAINING_READINGS_PER_KIND: Final = 400

DICTIONARY_BYTES: Final = 64 * 1024
"""zstd's trainer fills it with the commonest substrings of the samples. Measured on held-out
readings (one dictionary for all kinds, level 15): 16 KiB leaves singles 10-20 % larger than
64 KiB, 110 KiB gains 1-3 % more."""

_TRAIN_K: Final = 1024
_TRAIN_D: Final = 8
"""Fixed COVER parameters (segment size, dmer size): no parameter search, so no dependence on
timing or threads. Measured: k=64 leaves singles ~35 % larger than k=1024; zstd's own search
(``steps``) found k=1346, d=8, within 1 % of this."""

REPO: Final = Path(__file__).resolve().parents[1]
OUT_DIR: Final = REPO / "agent" / "dictionaries"

_ZONES: Final = (
    "Europe/Berlin", "Europe/London", "Europe/Madrid", "Europe/Rome", "Europe/Paris",
    "Europe/Amsterdam", "Europe/Vienna", "Europe/Stockholm", "America/New_York",
    "America/Chicago", "America/Denver", "America/Los_Angeles", "UTC",
)  # fmt: skip
_MAKERS: Final = (
    ("Example Medical", "BP-100"), ("Acme Health Devices", "AH-BPM2"),
    ("Northwind Diagnostics", "NW-Cuff 7"), ("Homehub Test Devices", "HH-BP-1"),
    ("Contoso Care", "CC-BP300"), ("Fabrikam Medical", "FM-Glu 2"),
    ("Homehub Test Devices", "HH-GLU-1"), ("Globex Vitals", "GX-Ox 5"),
    ("Initech Health", "IT-PLX"), ("Umbrella Devices", "UD-520"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SyntheticReading:
    """One synthetic reading as the hub stores it."""

    kind: str
    envelope: bytes
    """The stored single COSE_Sign1, as :meth:`agent.ingest.Prepared.envelope` made it."""
    payload: bytes
    """The payload inside it (what compression and batches work on)."""
    with_context: bool = False
    """A glucose reading with its Measurement Context joined."""


# ---------------------------------------------------------------------------
# Random but plausible inputs
# ---------------------------------------------------------------------------


def _hex(rng: random.Random, digits: int) -> str:
    return "".join(rng.choice("0123456789ABCDEF") for _ in range(digits))


def _hub_id(rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        return f"hub-{rng.randrange(10_000):04d}"
    if style == 1:
        return f"hh-{_hex(rng, 8).lower()}"
    return f"site{rng.randrange(100)}-hub-{rng.randrange(100_000)}"


def _patient_id(rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        return f"patient-{rng.randrange(100_000):05d}"
    if style == 1:
        h = _hex(rng, 32).lower()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return f"pt{rng.randrange(10**9)}"


def _device(rng: random.Random, device_time: datetime | None, received: datetime) -> DeviceFacts:
    maker, model = rng.choice(_MAKERS)
    address = ":".join(_hex(rng, 2) for _ in range(6))
    clock = None
    if device_time is not None and rng.random() < 0.6:
        # The device's Current Time read at connection: its own clock, off by up to 10 min.
        now = received + timedelta(seconds=rng.randrange(-600, 600))
        current = bytes(DateTime(now.year, now.month, now.day, now.hour, now.minute, now.second))
        clock = ClockFacts.from_current_time(current + bytes([now.isoweekday(), 0, 0]), received)
    return DeviceFacts(
        address=address,
        system_id=_hex(rng, 16) if rng.random() < 0.8 else None,
        manufacturer=maker,
        model=model,
        serial=f"{_hex(rng, 2)}-{rng.randrange(10**6):06d}",
        firmware=f"{rng.randrange(1, 5)}.{rng.randrange(10)}.{rng.randrange(20)}",
        hardware=f"rev {rng.choice('ABCD')}" if rng.random() < 0.3 else None,
        clock=clock,
    )


def _times(rng: random.Random) -> tuple[datetime, DateTime]:
    """Reception time (UTC) and the device's local time stamp a little before it."""
    received = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(3 * 365 * 86400))
    taken = received - timedelta(seconds=rng.randrange(30, 3 * 86400))
    return received, DateTime(
        taken.year, taken.month, taken.day, taken.hour, taken.minute, taken.second
    )


def _blood_pressure(rng: random.Random, stamp: DateTime) -> RawMeasurement | bytes:
    kpa = rng.random() < 0.1
    sys_mmhg = rng.randrange(95, 185)
    dia_mmhg = rng.randrange(55, min(sys_mmhg - 20, 120))
    map_mmhg = dia_mmhg + (sys_mmhg - dia_mmhg) // 3
    if kpa:

        def conv(v: int) -> Decimal:
            return (Decimal(v) * Decimal("0.133322")).quantize(Decimal("0.1"))

        systolic, diastolic, mean = conv(sys_mmhg), conv(dia_mmhg), conv(map_mmhg)
    else:
        systolic, diastolic, mean = Decimal(sys_mmhg), Decimal(dia_mmhg), Decimal(map_mmhg)
    reading = BpReading(
        systolic,
        diastolic,
        mean if rng.random() < 0.85 else None,
        unit=PressureUnit.KPA if kpa else PressureUnit.MMHG,
        time_stamp=stamp if rng.random() < 0.95 else None,
        pulse_rate=rng.randrange(48, 120) if rng.random() < 0.9 else None,
        user_id=rng.choice((None, 1, 2, 0xFF)),
        measurement_status=rng.choice((None, 0, 0, 0x0004, 0x0001, 0x0020)),
    )
    return bytes(reading)


def _glucose(rng: random.Random, stamp: DateTime, sequence: int) -> tuple[bytes, bytes | None]:
    mmol = rng.random() < 0.3
    control = rng.random() < 0.05
    if mmol:
        concentration, unit = mmol_per_l(f"{rng.randrange(30, 220) / 10:.1f}"), Unit.MOL_PER_L
    else:
        concentration, unit = mg_per_dl(str(rng.randrange(55, 350))), Unit.KG_PER_L
    context = None
    if not control and rng.random() < 0.6:
        full = rng.random() < 0.5
        context = GlucoseContext(
            carbohydrate_id=rng.randrange(1, 8) if full else None,
            carbohydrate_kg=Decimal(rng.randrange(5, 120)).scaleb(-3) if full else None,
            meal=rng.randrange(1, 6),
            tester=rng.randrange(1, 4) if full or rng.random() < 0.5 else None,
            health=rng.randrange(1, 6) if full or rng.random() < 0.5 else None,
            exercise_duration_s=rng.randrange(0, 7200, 60) if full else None,
            exercise_intensity_pct=rng.randrange(0, 101) if full else None,
            medication_id=rng.randrange(1, 6) if full and rng.random() < 0.7 else None,
            medication=Decimal(rng.randrange(1, 30)).scaleb(-6) if full else None,
            hba1c_pct=Decimal(rng.randrange(50, 110)).scaleb(-1) if rng.random() < 0.4 else None,
        )
    record = GlucoseRecord(
        sequence,
        stamp,
        concentration,
        unit=unit,
        sample_type=10 if control else rng.choice((1, 1, 1, 2)),
        sample_location=4 if control else rng.choice((1, 1, 1, 2, 15)),
        time_offset_min=rng.choice((None, 0, 0, -60, 60)),
        sensor_status=rng.choice((None, 0, 0, 0x0001, 0x0100)),
        context=context,
    )
    return record.measurement_value(), record.context_value()


def _pulse_oximetry(rng: random.Random, stamp: DateTime) -> tuple[str, bytes]:
    spo2 = rng.choice((Decimal(rng.randrange(86, 100)), Decimal(rng.randrange(880, 1000)) / 10))
    pulse = rng.randrange(45, 130)
    if rng.random() < 0.5:
        spot = SpotCheck(
            spo2,
            pulse,
            timestamp=stamp if rng.random() < 0.9 else None,
            measurement_status=rng.choice((None, 0, 0x0100, 0x0200)),
            device_sensor_status=rng.choice((None, 0, 0x0004)),
            pulse_amplitude_index=(
                Decimal(rng.randrange(5, 200)) / 10 if rng.random() < 0.6 else None
            ),
            device_clock_not_set=rng.random() < 0.05,
        )
        return PLX_SPOT_CHECK_MEASUREMENT, bytes(spot)
    fast = (spo2, pulse + rng.randrange(-3, 4)) if rng.random() < 0.5 else None
    sample = ContinuousSample(
        spo2,
        pulse,
        fast=fast,
        measurement_status=rng.choice((None, 0)),
        pulse_amplitude_index=Decimal(rng.randrange(5, 200)) / 10 if rng.random() < 0.6 else None,
    )
    return PLX_CONTINUOUS_MEASUREMENT, bytes(sample)


# ---------------------------------------------------------------------------
# Readings through the real pipeline
# ---------------------------------------------------------------------------


def synthetic_signer(seed: int) -> Signer:
    """A P-256 key derived from ``seed``: signs synthetic readings only."""
    scalar = int.from_bytes(hashlib.sha256(f"homehub synthetic {seed}".encode()).digest(), "big")
    return Signer.from_key(ec.derive_private_key(scalar % (2**255) + 1, ec.SECP256R1()))


def synthetic_readings(kind: str, count: int, seed: int) -> list[SyntheticReading]:
    """``count`` readings of one kind, through :func:`agent.ingest.prepare` and
    :meth:`~agent.ingest.Prepared.envelope`; the same seed gives the same bytes."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}, one of {KINDS}")
    rng = random.Random(f"{kind}/{seed}")
    signer = synthetic_signer(seed)
    out: list[SyntheticReading] = []
    for _hub, _patient, raw, device, ctx in _draws(kind, count, rng):
        prepared = prepare(raw, device, ctx)
        seq = rng.randrange(1, 10**7)
        envelope = prepared.envelope(seq, signer, rng.choice((None,) * 30 + (seq - 1,)))
        payload = cose.verify1(envelope, signer.public_key).payload
        out.append(
            SyntheticReading(kind, envelope, payload, GLUCOSE_MEASUREMENT_CONTEXT in raw.related)
        )
    return out


def hub_backlog(
    count: int, seed: int, kinds: tuple[str, ...] | None = None
) -> list[SyntheticReading]:
    """``count`` readings of one hub (what one batch holds): one patient, one device of each
    kind, readings of ``kinds`` (default all) interleaved in order of arrival, consecutive
    seqs."""
    rng = random.Random(f"backlog/{seed}/{kinds}")
    signer = synthetic_signer(seed)
    hub, patient, zone = _hub_id(rng), _patient_id(rng), rng.choice(_ZONES)
    received, _ = _times(rng)
    devices = {kind: _device(rng, received, received) for kind in KINDS}
    sequence = rng.randrange(1, 60_000)
    seq = rng.randrange(1, 10**6)
    out: list[SyntheticReading] = []
    for _ in range(count):
        kind = rng.choice(kinds or KINDS)
        received += timedelta(seconds=rng.randrange(60, 6 * 3600))
        taken = received - timedelta(seconds=rng.randrange(30, 600))
        stamp = DateTime(taken.year, taken.month, taken.day, taken.hour, taken.minute, taken.second)
        raw = _raw(kind, rng, stamp, sequence, received)
        sequence += 1
        seq += 1
        prepared = prepare(raw, devices[kind], Context(hub, patient, zone, received))
        envelope = prepared.envelope(seq, signer)
        payload = cose.verify1(envelope, signer.public_key).payload
        out.append(
            SyntheticReading(kind, envelope, payload, GLUCOSE_MEASUREMENT_CONTEXT in raw.related)
        )
    return out


def _draws(
    kind: str, count: int, rng: random.Random
) -> Iterator[tuple[str, str, RawMeasurement, DeviceFacts, Context]]:
    """Readings in small runs of one hub, patient and device (as a session delivers them)."""
    made = 0
    while made < count:
        hub, patient = _hub_id(rng), _patient_id(rng)
        zone = rng.choice(_ZONES)
        received, _ = _times(rng)
        device = _device(rng, received, received)
        sequence = rng.randrange(1, 60_000)
        for _ in range(min(rng.randrange(1, 6), count - made)):
            received, stamp = _times(rng)
            ctx = Context(hub, patient, zone, received)
            raw = _raw(kind, rng, stamp, sequence, received)
            sequence += 1
            made += 1
            yield hub, patient, raw, device, ctx


def _raw(
    kind: str, rng: random.Random, stamp: DateTime, sequence: int, received: datetime
) -> RawMeasurement:
    related: dict[str, bytes] = {}
    if kind == "blood_pressure":
        uuid, data = BLOOD_PRESSURE_MEASUREMENT, _blood_pressure(rng, stamp)
    elif kind == "glucose":
        uuid = GLUCOSE_MEASUREMENT
        data, context = _glucose(rng, stamp, sequence)
        if context is not None:
            related[GLUCOSE_MEASUREMENT_CONTEXT] = context
    else:
        uuid, data = _pulse_oximetry(rng, stamp)
    assert isinstance(data, bytes)
    return RawMeasurement(uuid, data, 0.0, received, related)


# ---------------------------------------------------------------------------
# Training and measuring
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DictionaryPlan:
    """One dictionary to train: its id and the kinds whose readings it is trained on."""

    dictionary_id: int
    kinds: tuple[str, ...]
    size_bytes: int = DICTIONARY_BYTES
    reading_version: int = derived_ids.READING_V1
    """The reading payloads it is trained on and sent with: 2 is without derived identifiers
    (agent/derived_ids.py), 3 also with Devices by reference (agent/device_refs.py)."""
    segment: int = _TRAIN_K
    """COVER's segment size k (fixed per plan: the shipped files must reproduce)."""


PLANS: Final = (
    DictionaryPlan(1, KINDS),
    DictionaryPlan(2, KINDS, reading_version=derived_ids.READING_V2),
    DictionaryPlan(3, KINDS, reading_version=device_refs.READING_V3, segment=2048),
)
"""What ships: one dictionary for all kinds per reading version. Measured on held-out
readings, one 64 KiB dictionary trained on every kind compresses each kind 3-6 % better than
a 32 KiB dictionary per kind (the Bundles share most of their structure: Devices, categories,
code systems), and a batch, which mixes kinds, can only name one. Dictionary 2, on version-2
readings, is what a platform that announces it gets (the highest announced id is used);
dictionary 1 stays for a platform that announces only it. Dictionary 3 is trained on
version-3 readings as a hub sends them (:func:`training_samples`): the first reading of a
device with its Devices in full, the next ones by reference; k = 2048 (measured on held-out
readings: 2-12 bytes smaller singles than 1024, and than 4096 for glucose)."""


def train(plan: DictionaryPlan, samples: list[bytes]) -> bytes:
    """A zstd dictionary whose zstd dictionary id is ``plan.dictionary_id``."""
    trained = zstandard.train_dictionary(
        plan.size_bytes,
        list[bytes | bytearray | memoryview](samples),
        dict_id=plan.dictionary_id,
        k=plan.segment,
        d=_TRAIN_D,
        threads=0,
        level=19,
    )
    data = trained.as_bytes()
    if zstandard.ZstdCompressionDict(data).dict_id() != plan.dictionary_id:
        raise RuntimeError("trained dictionary has another id")
    return data


def training_samples(
    kinds: tuple[str, ...],
    per_kind: int,
    seed: int,
    reading_version: int = derived_ids.READING_V1,
) -> list[bytes]:
    """The payloads of ``per_kind`` synthetic readings of each kind, interleaved, in the
    reading version asked for (as a compressed envelope carries them). Version 3 as a hub
    whose platform confirmed each reading's predecessor sends them: a reading whose device
    set is the one of the reading before it (a run of one device: :func:`synthetic_readings`)
    names it by reference, the first of a run carries its Devices in full (about a third)."""
    by_kind = [synthetic_readings(k, per_kind, seed) for k in kinds]
    if reading_version == device_refs.READING_V3:
        compacted = [_steady_v3([r.payload for r in group]) for group in by_kind]
        return [p for group in zip(*compacted, strict=True) for p in group]
    payloads = [r.payload for group in zip(*by_kind, strict=True) for r in group]
    if reading_version == derived_ids.READING_V1:
        return payloads
    return [derived_ids.compact(p) or p for p in payloads]


def _steady_v3(payloads: list[bytes]) -> list[bytes]:
    """Version 3 of each payload, by reference when the one before had the same device set."""
    out: list[bytes] = []
    previous: bytes | None = None
    for payload in payloads:
        found = device_refs.device_set(cbor2.loads(payload))
        digest = found[0] if found is not None else None
        known = {previous} if previous is not None else set()
        compacted = device_refs.compact(payload, known)
        out.append(compacted.payload if compacted is not None else payload)
        previous = digest
    return out


def trained_dictionaries(
    plans: tuple[DictionaryPlan, ...] = PLANS,
    per_kind: int = TRAINING_READINGS_PER_KIND,
    seed: int = TRAINING_SEED,
) -> dict[int, tuple[DictionaryPlan, bytes]]:
    """Every planned dictionary, trained."""
    return {
        p.dictionary_id: (
            p,
            train(p, training_samples(p.kinds, per_kind, seed, p.reading_version)),
        )
        for p in plans
    }


def manifest(trained: dict[int, tuple[DictionaryPlan, bytes]]) -> dict[str, object]:
    """The manifest shipped beside the files (agent/dictionaries/manifest.json)."""
    return {
        "v": 1,
        "dictionaries": [
            {
                "id": plan.dictionary_id,
                "file": f"{plan.dictionary_id}.zdict",
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                "kinds": list(plan.kinds),
                "reading_version": plan.reading_version,
                "trained_on": f"{TRAINING_READINGS_PER_KIND} synthetic readings per kind,"
                f" seed {TRAINING_SEED} (hil/train_dictionaries.py)",
            }
            for _, (plan, data) in sorted(trained.items())
        ],
    }


@dataclass(frozen=True, slots=True)
class SizeRow:
    """Envelope bytes per reading of one kind on held-out readings: median and maximum of
    single envelopes (stored, zstd alone, zstd with the dictionary), and per reading in a
    batch of 10 and of 50 of one hub (zstd alone, with the dictionary)."""

    kind: str
    stored: tuple[int, int]
    zstd: tuple[int, int]
    dictionary: tuple[int, int]
    batch10_zstd: int
    batch10_dictionary: int
    batch50_zstd: int
    batch50_dictionary: int
    first: tuple[int, int] | None = None
    """With a version-3 dictionary: singles whose Devices go in full (the first reading of a
    device, before the platform holds them); ``dictionary`` is then the steady state, each
    reading's Devices by reference. None for the other versions (no difference)."""


def _known_sets(readings: list[ReadingPayload]) -> frozenset[bytes]:
    """Every device set of ``readings``: a platform holding them all (steady state)."""
    return frozenset(
        found[0]
        for r in readings
        if (found := device_refs.device_set(cbor2.loads(r.payload))) is not None
    )


def measure(dictionary: Dictionary, count: int = 60) -> list[SizeRow]:
    """Envelope sizes on readings drawn with :data:`HELD_OUT_SEED` (not in the training)."""
    from agent.envelopes import ReadingPayload, build_single

    signer = synthetic_signer(HELD_OUT_SEED)
    v3 = dictionary.reading_version == device_refs.READING_V3
    rows = []
    for kind in (*KINDS, "glucose+context", "mixed"):
        if kind == "mixed":
            held = hub_backlog(count, HELD_OUT_SEED)
        elif kind == "glucose+context":
            drawn = synthetic_readings("glucose", 3 * count, HELD_OUT_SEED + 1)
            held = [r for r in drawn if r.with_context][:count]
        else:
            held = synthetic_readings(kind, count, HELD_OUT_SEED)
        readings = [ReadingPayload.from_stored(_seq(r), r.envelope) for r in held]
        known = _known_sets(readings)
        singles = [
            len(build_single(r, signer, dictionary, known_device_sets=known).data) for r in readings
        ]
        rows.append(
            SizeRow(
                kind,
                _spread([len(r.envelope) for r in held]),
                _spread([len(build_single(r, signer, None, compress=True).data) for r in readings]),
                _spread(singles),
                _per_reading(kind, 10, None),
                _per_reading(kind, 10, dictionary),
                _per_reading(kind, 50, None),
                _per_reading(kind, 50, dictionary),
                _spread([len(build_single(r, signer, dictionary).data) for r in readings])
                if v3
                else None,
            )
        )
    return rows


def _spread(sizes: list[int]) -> tuple[int, int]:
    ordered = sorted(sizes)
    return ordered[len(ordered) // 2], ordered[-1]


def _per_reading(kind: str, n: int, dictionary: Dictionary | None) -> int:
    """Bytes per reading of a batch of ``n`` readings of one hub (of ``kind``, or mixed)."""
    from agent.envelopes import ReadingPayload, build_batch

    kinds = None if kind == "mixed" else (kind.split("+")[0],)
    readings = [
        ReadingPayload.from_stored(_seq(r), r.envelope)
        for r in hub_backlog(n, HELD_OUT_SEED + n, kinds)
    ]
    batch = build_batch(
        readings,
        synthetic_signer(HELD_OUT_SEED),
        dictionary,
        1 << 20,
        compress=True,
        known_device_sets=_known_sets(readings),
    )
    assert len(batch.seqs) == n
    return round(len(batch.data) / n)


def _seq(reading: SyntheticReading) -> int:
    seq = cbor2.loads(reading.payload)["seq"]
    assert isinstance(seq, int)
    return seq


def print_sizes(rows: list[SizeRow], out: Callable[[str], None]) -> None:
    first = any(r.first is not None for r in rows)
    out("envelope bytes on held-out readings: single (median/max), per reading in a batch"
        + ("; dict: Devices by reference (steady), first: in full" if first else ""))  # fmt: skip
    out(f"{'kind':15} {'stored':>11} {'zstd':>9} {'dict':>9}"
        + (f" {'first':>9}" if first else "")
        + f"   {'b10 zstd':>8} {'b10 dict':>8} {'b50 zstd':>8} {'b50 dict':>8}")  # fmt: skip
    for r in rows:
        firsts = f" {r.first[0]:>4}/{r.first[1]:<4}" if r.first is not None else ""
        out(
            f"{r.kind:15} {r.stored[0]:>5}/{r.stored[1]:<5} {r.zstd[0]:>4}/{r.zstd[1]:<4}"
            f" {r.dictionary[0]:>4}/{r.dictionary[1]:<4}{firsts}   {r.batch10_zstd:>8}"
            f" {r.batch10_dictionary:>8} {r.batch50_zstd:>8} {r.batch50_dictionary:>8}"
        )


def main(argv: list[str] | None = None) -> int:
    """Train and write (default), or ``--check`` the shipped files against a fresh training."""
    parser = argparse.ArgumentParser(prog="python -m hil.train_dictionaries")
    parser.add_argument("--check", action="store_true", help="compare with agent/dictionaries/")
    args = parser.parse_args(argv)
    trained = trained_dictionaries()
    if args.check:
        for did, (_, data) in trained.items():
            shipped = (OUT_DIR / f"{did}.zdict").read_bytes()
            if shipped != data:
                print(f"{did}.zdict differs from a fresh training", file=sys.stderr)
                return 1
        print("dictionaries reproduce")
        return 0
    OUT_DIR.mkdir(exist_ok=True)
    for did, (_, data) in trained.items():
        (OUT_DIR / f"{did}.zdict").write_bytes(data)
    (OUT_DIR / "manifest.json").write_text(json.dumps(manifest(trained), indent=2) + "\n")
    for did, dictionary in dictionaries.load(OUT_DIR).items():
        print(f"dictionary {did}:")
        print_sizes(measure(dictionary), print)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
