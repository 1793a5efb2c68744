"""The person-linkage model as a file: the trained Splink settings with a format tag, a
settings hash and rounded parameters, so a stored model re-scores exactly (docs/linkage.md)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import splink

MODEL_FORMAT = "joinedup-person-model/1"


def _settings_hash(splink_settings: dict[str, Any]) -> str:
    # linker_uid is a random per-linker id, not part of the model.
    payload = {k: v for k, v in splink_settings.items() if k != "linker_uid"}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def make_model(splink_settings: dict[str, Any], model_version: str) -> dict[str, Any]:
    return {
        "format": MODEL_FORMAT,
        "model_version": model_version,
        "settings_hash": _settings_hash(splink_settings),
        "splink_version": splink.__version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "splink_settings": splink_settings,
    }


def floor_m_probabilities(splink_settings: dict[str, Any], floor: float) -> dict[str, Any]:
    """Raise every non-null level's m probability to at least `floor`, renormalised per
    comparison (returns a new dict; u probabilities untouched)."""
    out = json.loads(json.dumps(splink_settings, default=str))
    if floor <= 0:
        return out
    for comparison in out["comparisons"]:
        levels = [lv for lv in comparison["comparison_levels"] if not lv.get("is_null_level")]
        ms = [max(float(lv.get("m_probability") or 0.0), floor) for lv in levels]
        total = sum(ms)
        for lv, m in zip(levels, ms, strict=True):
            lv["m_probability"] = m / total
    return out


def fill_unobserved_u(splink_settings: dict[str, Any], pairs_sampled: float) -> dict[str, Any]:
    """Give every non-null level the u sample never saw (no u learned) the rule-of-three
    bound, u = 3 / pairs sampled (the 95% upper bound on a rate with no event in that many
    tries). Without a u Splink scores such a level with a default for its position in the
    comparison, which weighs a rare middle level (same names next to an estimated DOB, an
    exact UPN) about like 'else': whether it counted for or against a pair turned on
    whether one such pair happened to fall in the 2M-pair sample (messy profile: 8 vs 44
    missed pairs with an estimated DOB from one run to the next). Returns a new dict."""
    out = json.loads(json.dumps(splink_settings, default=str))
    bound = 3.0 / max(float(pairs_sampled), 3.0)
    for comparison in out["comparisons"]:
        for lv in comparison["comparison_levels"]:
            if lv.get("is_null_level"):
                continue
            if not isinstance(lv.get("u_probability"), int | float):
                lv["u_probability"] = bound
    return out


#: Significant digits kept of every trained probability. Splink's sampling is a hash of the
#: record id (repeatable at any thread count), but EM sums floats in parallel, in an order
#: that varies from run to run at the 1e-13 level; rounding far above that noise makes a
#: re-run of a killed hub run reproduce the model (and its settings hash) while training
#: uses every core. Six digits are far finer than any m/u estimate is accurate.
PARAMETER_DIGITS = 6


def round_parameters(
    splink_settings: dict[str, Any], digits: int = PARAMETER_DIGITS
) -> dict[str, Any]:
    """Every m/u probability and the prior rounded to `digits` significant digits."""
    out = json.loads(json.dumps(splink_settings, default=str))

    def r(x: Any) -> Any:
        return float(f"{x:.{digits}g}") if isinstance(x, float) else x

    out["probability_two_random_records_match"] = r(out.get("probability_two_random_records_match"))
    for comparison in out["comparisons"]:
        for lv in comparison["comparison_levels"]:
            for k in ("m_probability", "u_probability"):
                if k in lv:
                    lv[k] = r(lv[k])
    return out


def require_comparisons(model_settings: dict[str, Any], where: str = "linkage model") -> None:
    """Refuse settings with no comparison: Splink would score pairs on the prior alone with
    broken SQL, and a model trained that way says nothing about any pair."""
    if not model_settings.get("comparisons"):
        raise ValueError(
            f"{where} has no comparisons: no identifier column the hub compares is "
            "populated in the linkage input, or training lost them (nothing to score pairs on)"
        )


def model_to_json(model: dict[str, Any]) -> str:
    return json.dumps(model, sort_keys=True, indent=1, default=str)


def load_model(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Load a model from JSON text, a path or a dict; refuse one whose hash does not match."""
    where = "model dict"
    if isinstance(source, dict):
        model = source
    else:
        text = str(source)
        if not text.lstrip().startswith("{"):
            where = str(source)
            text = Path(source).read_text(encoding="utf-8")
        model = json.loads(text)
    for key in ("format", "model_version", "settings_hash", "splink_settings"):
        if key not in model:
            raise ValueError(f"{where}: linkage model lacks key {key!r}")
    if model["format"] != MODEL_FORMAT:
        raise ValueError(f"{where}: unknown model format {model['format']!r}")
    actual = _settings_hash(model["splink_settings"])
    if actual != model["settings_hash"]:
        raise ValueError(
            f"{where}: settings_hash mismatch for model {model['model_version']!r} "
            "(edited or corrupted model file)"
        )
    require_comparisons(model["splink_settings"], f"{where}: model {model['model_version']!r}")
    return model
