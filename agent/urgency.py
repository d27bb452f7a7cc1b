"""Which readings go before a backlog: values past alert limits (sans-I/O).

Issue 9: "fresh readings and readings flagged abnormal go before backfill". A reading stored
while the link was down for more than the fresh window (agent/batching.py) is backfill and
would wait behind everything older; one whose value is past an alert limit below goes in the
*urgent* lane instead, before the backlog and never held by the byte budget.

This is a transport priority, not a clinical judgement: nothing in the record changes (the
hub writes no ``interpretation`` of its own, the platform and its clinicians decide what a
value means for this patient), and a reading not found urgent loses nothing: it is sent in
its turn. The limits are the usual thresholds for prompt review in remote monitoring:

- systolic >= 180 or < 90 mmHg, diastolic >= 120 mmHg (ACC/AHA 2017: hypertensive crisis;
  systolic < 90: hypotension);
- pulse rate < 40 or >= 130 /min (cuff or oximeter);
- SpO2 < 90 %;
- glucose < 70 mg/dL (3.9 mmol/L; ADA level 1 hypoglycaemia) or >= 300 mg/dL (16.7 mmol/L).

Read from the FHIR Observations the normalizers wrote (codes MDC, units UCUM, kPa converted),
so every device kind and quirk the normalizers handle is covered. A value in a unit not listed
is not judged.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from agent.normalize.codes import MDC_SYSTEM

MMHG_PER_KPA: Final = Decimal("7.50062")
MMOL_PER_L_TO_MG_PER_DL: Final = Decimal("18.016")


@dataclass(frozen=True, slots=True)
class Limit:
    """Values below ``low`` or at or above ``high`` (in ``unit``) are urgent."""

    unit: str
    low: Decimal | None = None
    high: Decimal | None = None

    def crossed(self, value: Decimal) -> bool:
        return (self.low is not None and value < self.low) or (
            self.high is not None and value >= self.high
        )


_BP_SYSTOLIC: Final = Limit("mm[Hg]", low=Decimal(90), high=Decimal(180))
_BP_DIASTOLIC: Final = Limit("mm[Hg]", high=Decimal(120))
_PULSE: Final = Limit("/min", low=Decimal(40), high=Decimal(130))
_SPO2: Final = Limit("%", low=Decimal(90))
_GLUCOSE: Final = Limit("mg/dL", low=Decimal(70), high=Decimal(300))

LIMITS: Final[Mapping[str, Limit]] = {
    "150021": _BP_SYSTOLIC,  # MDC_PRESS_BLD_NONINV_SYS
    "150022": _BP_DIASTOLIC,  # MDC_PRESS_BLD_NONINV_DIA
    "149546": _PULSE,  # MDC_PULS_RATE_NON_INV
    "149530": _PULSE,  # MDC_PULS_OXIM_PULS_RATE
    "150456": _SPO2,  # MDC_PULS_OXIM_SAT_O2
    **{
        str(code): _GLUCOSE
        for code in (160020, 160184, 160188, 160192, 160196, 160200, 160204, 160364, 160368)
    },  # MDC_CONC_GLU_* (capillary, venous, arterial, undetermined; whole blood and plasma)
}
"""Alert limits by MDC code (module docstring). Interstitial-fluid glucose (a CGM) is not
judged: its readings come by the hundred and are reviewed as a trace."""

_CONVERSIONS: Final[Mapping[tuple[str, str], Decimal]] = {
    ("kPa", "mm[Hg]"): MMHG_PER_KPA,
    ("mmol/L", "mg/dL"): MMOL_PER_L_TO_MG_PER_DL,
}


def is_urgent(bundle: Mapping[str, Any]) -> bool:
    """Whether any Observation of a reading's Bundle has a value past its alert limit."""
    for code, quantity in _coded_values(bundle):
        limit = LIMITS.get(code)
        if limit is None:
            continue
        value = _in_unit(quantity, limit.unit)
        if value is not None and limit.crossed(value):
            return True
    return False


def _coded_values(bundle: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(MDC code, valueQuantity) of every Observation and component of ``bundle``."""
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "Observation":
            continue
        parts = [resource]
        components = resource.get("component")
        if isinstance(components, list):
            parts.extend(c for c in components if isinstance(c, dict))
        for part in parts:
            quantity = part.get("valueQuantity")
            if not isinstance(quantity, dict):
                continue
            for code in _mdc_codes(part.get("code")):
                yield code, quantity


def _mdc_codes(concept: object) -> Iterator[str]:
    if not isinstance(concept, dict) or not isinstance(concept.get("coding"), list):
        return
    for coding in concept["coding"]:
        if isinstance(coding, dict) and coding.get("system") == MDC_SYSTEM:
            code = coding.get("code")
            if isinstance(code, str):
                yield code


def _in_unit(quantity: Mapping[str, Any], unit: str) -> Decimal | None:
    value, code = quantity.get("value"), quantity.get("code")
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return None
    number = Decimal(value)
    if code == unit:
        return number
    factor = _CONVERSIONS.get((str(code), unit))
    return None if factor is None else number * factor
