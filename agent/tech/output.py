"""What the technician's commands share to print: JSON of the values our records hold."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def json_default(value: object) -> Any:
    """``json.dumps(default=...)``: Decimals as numbers, bytes as hex."""
    if isinstance(value, Decimal):
        return float(value) if value != value.to_integral_value() else int(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
