"""EM over the hub's training blocks, kept safe from blocks a partnership's data cannot use.

Splink's EM session deactivates every comparison whose columns the training block's rule uses
(all its pairs agree on them by construction) by writing the reduced comparison list, and a
block-adjusted prior, into the linker's own settings; only a session that succeeds puts the
full model back. A block that fails therefore left the linker with comparisons missing, and a
block that leaves no comparison to estimate always fails (Splink builds `prior +  as
match_weight`). That is how the FEBRL run broke under the amended spec v3: no postcode, so no
address columns, and the names + DOB block used a column of every comparison left; the
swallowed failure left a model with no comparison at all and a prior of ~1, which predict
could not score. Here such a block is skipped before it runs, a failed block has the linker's
settings restored, and the trained model is checked to hold every comparison it was built
with.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from splink.internals.blocking_rule_creator import BlockingRuleCreator

# A comparison level reads `<col>_l` / `<col>_r` (quoted for DuckDB, backticks for Spark); a
# blocking rule reads `l.<col>` / `r.<col>`.
_LEVEL_COLUMN = re.compile(r"\b(\w+)_[lr]\b")
_RULE_COLUMN = re.compile(r"\b[lr]\.[`\"]?(\w+)")


def comparison_columns(model_settings: dict[str, Any]) -> dict[str, set[str]]:
    """Input columns each comparison of `model_settings` (Splink's settings dict) reads."""
    return {
        c["output_column_name"]: {
            col
            for lv in c["comparison_levels"]
            for col in _LEVEL_COLUMN.findall(str(lv.get("sql_condition", "")))
        }
        for c in model_settings["comparisons"]
    }


def rule_sql(rule: BlockingRuleCreator | str, dialect: str) -> str:
    return rule if isinstance(rule, str) else rule.get_blocking_rule(dialect).blocking_rule_sql


def comparisons_left(rule: BlockingRuleCreator | str, model_settings: dict[str, Any]) -> list[str]:
    """Comparisons EM can estimate within `rule`'s block: those reading none of its columns
    (Splink deactivates the others for that block)."""
    used = set(_RULE_COLUMN.findall(rule_sql(rule, model_settings["sql_dialect"])))
    return [n for n, cols in comparison_columns(model_settings).items() if not cols & used]


def estimate_m_on_blocks(
    linker: Any,
    rules: Sequence[BlockingRuleCreator],
    log: logging.Logger,
    fallback: Sequence[BlockingRuleCreator] = (),
) -> int:
    """EM on each training block that leaves a comparison to estimate; returns how many
    blocks trained. A block that fails (a small partnership may have no pair in one) is
    logged and skipped with the linker's settings as they were before it. When the first
    block trains nothing (no two records share an NHS number yet), the `fallback` blocks
    run after the others, so the names and DOB are still estimated."""
    settings = linker.misc.save_model_to_json()
    built = [c["output_column_name"] for c in settings["comparisons"]]
    trained = [_em_block(linker, rule, settings, log) for rule in rules]
    if rules and not trained[0]:
        trained += [_em_block(linker, rule, settings, log) for rule in fallback]
    learned = [c.output_column_name for c in linker._settings_obj.comparisons]  # noqa: SLF001
    if learned != built:
        raise ValueError(
            f"training changed the model's comparisons ({built} -> {learned}): refusing "
            "a model that would not score what it was built to"
        )
    return sum(trained)


def _em_block(
    linker: Any, rule: BlockingRuleCreator, settings: dict[str, Any], log: logging.Logger
) -> bool:
    if not comparisons_left(rule, settings):
        log.info(
            "EM skipped a training block: its rule (%s) reads a column of every "
            "comparison, so none is left to estimate",
            rule_sql(rule, settings["sql_dialect"]),
        )
        return False
    # Splink keeps the model here and edits it in place during the session.
    saved = linker._settings_obj.core_model_settings.copy()  # noqa: SLF001
    try:
        linker.training.estimate_parameters_using_expectation_maximisation(rule)
        return True
    except Exception as exc:  # noqa: BLE001 - Splink raises plain errors here
        linker._settings_obj.core_model_settings = saved  # noqa: SLF001
        log.warning("EM skipped a training block (%s)", type(exc).__name__)
        return False
