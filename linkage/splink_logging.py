"""Splink's training log, summarised: EM warns once per comparison level it could not train
("Level ... not observed in dataset, unable to train m value"), dozens of lines per run on a
small partnership, most for levels another training block trains anyway. What matters is which
levels no block trained (their m stays at the starting value), so that is logged once.

The filter sits on Splink's EM logger only, and only while the hub's training runs: any other
Splink warning, and the same warning from anyone else's Splink use, pass untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

EM_LOGGER = "splink.internals.expectation_maximisation"
_NOT_TRAINED = "unable to train m value"


class _DropUntrainedM(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if _NOT_TRAINED in record.getMessage():
            self.dropped += 1
            return False
        return True


def untrained_m_levels(linker: Any) -> list[str]:
    """'comparison: level' for every non-null level with no m estimate from any EM block."""
    out = []
    for comp in linker._settings_obj.comparisons:  # noqa: SLF001 - Splink keeps them here
        for level in comp.comparison_levels:
            if not level.is_null_level and not level._has_estimated_m_values:  # noqa: SLF001
                out.append(f"{comp.output_column_name}: {level.label_for_charts}")
    return out


@contextmanager
def summarise_untrained_m(linker: Any, log: logging.Logger) -> Iterator[None]:
    """Around the EM calls of one training: drop Splink's per-level warnings, then log one line
    naming the levels left at their starting values (none: nothing is logged)."""
    em_log = logging.getLogger(EM_LOGGER)
    drop = _DropUntrainedM()
    em_log.addFilter(drop)
    try:
        yield
    finally:
        em_log.removeFilter(drop)
    levels = untrained_m_levels(linker)
    if levels:
        log.warning(
            "m not trained for %d comparison level(s): %s (kept at their starting "
            "values; %d Splink warnings summarised)",
            len(levels),
            "; ".join(levels),
            drop.dropped,
        )
