"""``[indicator]``: defaults, the example's values, and each bad value named with its key and
line; ``homehub config-schema`` lists every key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
from agent.cli import main
from agent.config import IndicatorConfig
from agent.errors import ConfigError
from agent.indicator import OFFLINE_ATTENTION_S

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "homehub.example.toml"


def _example_with(tmp_path: Path, table: str) -> Path:
    """The example with its [indicator] table replaced by ``table`` (TOML lines)."""
    text = EXAMPLE.read_text()
    start = text.index("\n[indicator]\n")
    path = tmp_path / "homehub.toml"
    path.write_text(text[:start] + "\n[indicator]\n" + table + "\n")
    return path


def test_the_example_keeps_the_defaults() -> None:
    assert IndicatorConfig() == config.load(EXAMPLE).indicator
    assert (
        IndicatorConfig(
            backend="none",
            chip=Path("/dev/gpiochip0"),
            lines=(("red", 17), ("green", 27), ("blue", 22)),
            active_low=False,
            offline_attention_s=OFFLINE_ATTENTION_S,
        )
        == IndicatorConfig()
    )


def test_without_the_section_there_is_no_indicator(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    path = tmp_path / "homehub.toml"
    path.write_text(text[: text.index("\n[indicator]\n")])
    assert IndicatorConfig() == config.load(path).indicator


def test_a_single_green_led_active_low(tmp_path: Path) -> None:
    path = _example_with(
        tmp_path,
        'backend = "gpiod"\nchip = "/dev/gpiochip4"\nlines = { green = 23 }\n'
        "active_low = true\noffline_attention_s = 3600",
    )
    assert (
        IndicatorConfig(
            backend="gpiod",
            chip=Path("/dev/gpiochip4"),
            lines=(("green", 23),),
            active_low=True,
            offline_attention_s=3600.0,
        )
        == config.load(path).indicator
    )


def test_lines_in_any_order_as_a_table(tmp_path: Path) -> None:
    """An inline table or a [indicator.lines] table; kept in colour order."""
    inline = _example_with(tmp_path, "lines = { blue = 0, red = 1023 }")
    assert (("red", 1023), ("blue", 0)) == config.load(inline).indicator.lines
    table = _example_with(tmp_path, 'backend = "gpiod"\n[indicator.lines]\ngreen = 4\nred = 5')
    assert (("red", 5), ("green", 4)) == config.load(table).indicator.lines


def test_the_log_backend(tmp_path: Path) -> None:
    assert "log" == config.load(_example_with(tmp_path, 'backend = "log"')).indicator.backend


@pytest.mark.parametrize(
    ("table", "key", "reason"),
    [
        ('backend = "led"', "indicator.backend", "must be one of 'none', 'log', 'gpiod'"),
        ("backend = 1", "indicator.backend", "must be a str, not int"),
        ('chip = ""', "indicator.chip", "must be a non-empty path string"),
        ('chip = "gpiochip0"', "indicator.chip", "must be a GPIO chip under /dev, e.g."),
        ('chip = "/sys/class/gpio"', "indicator.chip", "must be a GPIO chip under /dev, e.g."),
        ("lines = 17", "indicator.lines", "must be a dict, not int"),
        ("lines = {}", "indicator.lines", "must wire at least one colour, e.g. { green = 27 }"),
        (
            "lines = { white = 4 }",
            "indicator.lines",
            "has no colour 'white' (colours: red, green, blue)",
        ),
        ("lines = { red = 1024 }", "indicator.lines", "red must be in 0..1023, not 1024"),
        ("lines = { green = -1 }", "indicator.lines", "green must be in 0..1023, not -1"),
        (
            "lines = { blue = 2.0 }",
            "indicator.lines",
            "blue must be a line offset (an integer), not float",
        ),
        (
            "lines = { red = true }",
            "indicator.lines",
            "red must be a line offset (an integer), not bool",
        ),
        (
            "lines = { red = 5, green = 5 }",
            "indicator.lines",
            "green is line 5, as red (each colour needs its own line)",
        ),
        ('active_low = "yes"', "indicator.active_low", "must be a bool, not str"),
        (
            "offline_attention_s = 60",
            "indicator.offline_attention_s",
            "must be in 600..604800 s, not 60",
        ),
        (
            "offline_attention_s = nan",
            "indicator.offline_attention_s",
            "must be a finite number, not nan",
        ),
        ("red_line = 17", "indicator.red_line", "unknown key (known: active_low, backend,"),
    ],
)
def test_bad_values_name_the_key_and_line(
    tmp_path: Path, table: str, key: str, reason: str
) -> None:
    path = _example_with(tmp_path, table)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    err = caught.value
    assert key == err.key
    assert err.reason.startswith(reason), err.reason
    lines = path.read_text().splitlines()
    assert err.line is not None
    assert lines[err.line - 1].startswith(key.split(".")[1]), (err.line, lines[err.line - 1])
    assert 1 == str(err).count(f"key '{key}'")
    assert "\n" not in str(err)


def test_check_config_prints_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The technician's command: one line on stderr with the file, line and key, exit 2."""
    path = _example_with(tmp_path, 'backend = "gpiod"\nlines = { red = 22, blue = 22 }')
    assert 2 == main(["check-config", str(path)])
    out, err = capsys.readouterr()
    line = path.read_text().splitlines().index("lines = { red = 22, blue = 22 }") + 1
    assert "" == out
    assert err == (
        f"homehub: {path}:{line}: key 'indicator.lines': blue is line 22, as red"
        " (each colour needs its own line)\n"
    )


def test_config_schema_lists_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert 0 == main(["config-schema"])
    out = capsys.readouterr().out
    section = out[out.index("[indicator]\n") :].split("\n[")[0]
    keys = [line.split(":")[0].strip() for line in section.splitlines()[1:]]
    assert ["backend", "chip", "lines", "active_low", "offline_attention_s"] == keys
    assert "  backend: str (default none)  # the patient status LED" in section
    assert "  lines: dict (default {'red': 17, 'green': 27, 'blue': 22})  # gpiod:" in section
    assert "  offline_attention_s: float (default 21600.0, 600..604800 s)" in section
