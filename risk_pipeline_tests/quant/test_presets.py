"""Risk-level presets: each level loads, the book's own values and the environment override it, bad values are
named by file, field, value and rule."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from risk_pipeline.defs.hedging.config import load_hedging_config
from risk_pipeline.defs.sizing.config import load_sizing_config
from risk_pipeline.paths import DATA_DIR, LIMITS_FILE
from risk_pipeline.quant import presets
from risk_pipeline.quant.limits import LimitsConfigError, load_limits
from risk_pipeline.risk_levels import (
    capital_with_overrides,
    effective_configuration,
    hedging_for_book,
    sizing_for_book,
)

RAW = yaml.safe_load(LIMITS_FILE.read_text())


def _with_level(level: str | None, **section: object) -> dict:
    raw = copy.deepcopy(RAW)
    book = raw["books"]["core_equity"]
    for key in presets.LIMITS["moderate"]:  # the test book states none of the preset's fields itself
        book.pop(key, None)
    if level is not None:
        book["risk_level"] = level
    book.update(section)
    return raw


@pytest.mark.parametrize("level", presets.RISK_LEVELS)
def test_each_level_sets_the_limits_sizing_and_hedging_of_a_book(level: str) -> None:
    cfg = load_limits(_with_level(level), env={}).for_book("core_equity")
    assert cfg.risk_level == level
    for name, value in presets.LIMITS[level].items():
        assert getattr(cfg, name) == pytest.approx(value), name
    # money caps are the file's, whatever the level
    assert cfg.max_abs_net_dollar_delta == RAW["books"]["core_equity"]["max_abs_net_dollar_delta"]
    assert cfg.max_var_99_1d == RAW["defaults"]["max_var_99_1d"]
    hedging = hedging_for_book(load_hedging_config(DATA_DIR / "hedging" / "hedging.yaml"), "core_equity", level)
    for name, value in presets.HEDGING[level].items():
        assert getattr(hedging, name) == pytest.approx(value), name
    sizing = sizing_for_book(load_sizing_config(), level)
    for name, value in presets.SIZING[level].items():
        assert getattr(sizing.defaults, name) == pytest.approx(value), name
    base = load_sizing_config()
    ratio = presets.SIZING[level]["kelly_fraction"] / 0.25
    for name, s in sizing.strategies.items():
        assert s.kelly_fraction == pytest.approx(min(1.0, base.strategies[name].kelly_fraction * ratio))


def test_moderate_is_the_shipped_configuration() -> None:
    """Naming moderate changes nothing: its values are the shipped defaults of the three files."""
    shipped = load_limits(LIMITS_FILE, env={})
    for name, value in presets.LIMITS["moderate"].items():
        assert getattr(shipped.defaults, name) == pytest.approx(value), name
    hedging = load_hedging_config(DATA_DIR / "hedging" / "hedging.yaml")
    for name, value in presets.HEDGING["moderate"].items():
        assert getattr(hedging.defaults, name) == pytest.approx(value), name
    sizing = load_sizing_config()
    assert sizing_for_book(sizing, "moderate") == sizing
    # vol_overlay's own tail_es_threshold_pct_nav (0.04) survives its preset
    assert hedging_for_book(hedging, "vol_overlay", "conservative").tail_es_threshold_pct_nav == 0.04


def test_the_books_own_values_override_its_preset() -> None:
    cfg = load_limits(_with_level("conservative", max_drawdown_pct=0.08, max_pairwise_correlation=0.9), env={})
    book = cfg.for_book("core_equity")
    assert (book.max_drawdown_pct, book.max_pairwise_correlation) == (0.08, 0.9)
    assert book.light_drawdown_pct == presets.LIMITS["conservative"]["light_drawdown_pct"]
    # the other books keep the defaults (no level)
    assert cfg.for_book("vol_overlay").risk_level is None and cfg.for_book("vol_overlay").max_drawdown_pct == 0.10


def test_environment_overrides_level_and_drawdown_and_are_recorded() -> None:
    env = {
        "RISK_PIPELINE_RISK_LEVEL": "aggressive",
        "RISK_PIPELINE_RISK_LEVEL_VOL_OVERLAY": "Conservative",
        "RISK_PIPELINE_MAX_DRAWDOWN_PCT_CORE_EQUITY": "0.12",
    }
    cfg = load_limits(_with_level("moderate"), env=env)
    core, vol = cfg.for_book("core_equity"), cfg.for_book("vol_overlay")
    assert core.risk_level == "aggressive" and core.max_drawdown_pct == 0.12
    assert core.light_drawdown_pct == presets.LIMITS["aggressive"]["light_drawdown_pct"]
    assert (
        vol.risk_level == "conservative" and vol.max_drawdown_pct == presets.LIMITS["conservative"]["max_drawdown_pct"]
    )
    # a book without a section (the folder source's 'core') gets the global level too
    assert cfg.for_book("core").risk_level == "aggressive"
    assert dict(core.environment) == {
        "RISK_PIPELINE_RISK_LEVEL": "aggressive",
        "RISK_PIPELINE_MAX_DRAWDOWN_PCT_CORE_EQUITY": "0.12",
    }
    line = effective_configuration(cfg.version, core.risk_level, core.environment)
    assert line == (
        f"limits {RAW['version']}; risk_level aggressive; environment "
        "RISK_PIPELINE_MAX_DRAWDOWN_PCT_CORE_EQUITY=0.12, RISK_PIPELINE_RISK_LEVEL=aggressive"
    )
    assert capital_with_overrides({"core_equity": 75e6, "vol_overlay": 5e7}, {
        "RISK_PIPELINE_PORTFOLIO_VALUE_CORE_EQUITY": "80000000"
    }) == {"core_equity": 8e7, "vol_overlay": 5e7}  # fmt: skip


def test_invalid_values_name_file_field_value_and_rule(tmp_path: Path) -> None:
    env = {
        "RISK_PIPELINE_RISK_LEVEL": "reckless",
        "RISK_PIPELINE_MAX_DRAWDOWN_PCT_VOL_OVERLAY": "1.5",
        "RISK_PIPELINE_MAX_DRAWDOWN_PCT_CORE_EQUITY": "0.04",  # below the light level 0.05
    }
    with pytest.raises(LimitsConfigError) as err:
        load_limits(LIMITS_FILE, env=env)
    got = {(p.file, p.book, p.field, p.value) for p in err.value.problems}
    assert got == {
        ("environment", "*", "RISK_PIPELINE_RISK_LEVEL", "reckless"),
        ("environment", "vol_overlay", "RISK_PIPELINE_MAX_DRAWDOWN_PCT_VOL_OVERLAY", "1.5"),
        ("environment", "core_equity", "RISK_PIPELINE_MAX_DRAWDOWN_PCT_CORE_EQUITY", "0.04"),
    }
    text = str(err.value)
    assert "must be one of ['conservative', 'moderate', 'aggressive']" in text
    assert "must be a number in (0, 1)" in text
    assert "must satisfy light_drawdown_pct < moderate_drawdown_pct < max_drawdown_pct" in text
    # a bad level in the file names the file, the book and the field
    path = tmp_path / "limits.yaml"
    path.write_text(yaml.safe_dump(_with_level("bold")))
    with pytest.raises(LimitsConfigError) as err:
        load_limits(path, env={})
    (p,) = err.value.problems
    assert (p.file, p.book, p.field, p.value) == (str(path), "core_equity", "risk_level", "bold")
    assert p.rule == presets.LEVEL_RULE + " (or null to disable)"
    # a preset whose levels a book section contradicts is caught like a hand-written file
    path.write_text(yaml.safe_dump(_with_level("conservative", light_drawdown_pct=0.07)))
    with pytest.raises(LimitsConfigError, match="light_drawdown_pct < moderate_drawdown_pct"):
        load_limits(path, env={})
    with pytest.raises(LimitsConfigError, match=r"RISK_PIPELINE_PORTFOLIO_VALUE_CORE_EQUITY.*finite number > 0"):
        capital_with_overrides({"core_equity": 75e6}, {"RISK_PIPELINE_PORTFOLIO_VALUE_CORE_EQUITY": "-5"})
