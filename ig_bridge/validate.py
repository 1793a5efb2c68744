"""Great Expectations 1.x validation of an extract, at two levels.

Extract level (header, emptiness): a failure stops the batch (`ExtractRefused`); a set
comparison in plain Python, so no GX import before the first row is read.
Row level: GX runs on derived *status* columns (one per checked field, value "ok" or a reason
code such as "bad check digit"), never on identifier values, so results and Data Docs carry no
plaintext and GX stays fast. Rows GX marks unexpected go to quarantine with "<field>: <reason>".
GX loads at the first status combination that is not all "ok" (or for `run`'s Data Docs), so
`validate` on a clean extract never imports it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@functools.cache
def _great_expectations() -> dict[str, Any]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # GX imports pyspark whenever it is installed (the hub's [spark] extra), and pyspark warns
    # at import that it does not support pandas 3, though validation never uses Spark. Silence
    # that one warning for this import only; a Spark run (linkage.spark_linkage) still shows it.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"PySpark does not yet fully support pandas",
            category=FutureWarning,
            module=r"pyspark\.",
        )
        import great_expectations
        import great_expectations.expectations

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    return {"gx": great_expectations, "gxe": great_expectations.expectations}


class _OnFirstUse:
    """Great Expectations costs ~10 CPU-seconds of imports: it is imported when a check first
    runs, not whenever a bridge command (keys, reidentify, --help) starts."""

    def __init__(self, which: str) -> None:
        self._which = which

    def __getattr__(self, name: str) -> Any:
        return getattr(_great_expectations()[self._which], name)


gx = _OnFirstUse("gx")
gxe = _OnFirstUse("gxe")

OK = "ok"
_MAX_VERDICTS = 100_000


class ExtractRefused(Exception):
    """The whole extract is refused; `report_path` explains why to the data officer."""

    def __init__(self, report_path: Path | None, problems: list[str]) -> None:
        self.report_path = report_path
        self.problems = problems
        where = f" (report: {report_path})" if report_path else ""
        super().__init__("extract refused: " + "; ".join(problems) + where)


@dataclass
class RowCheck:
    """Statuses GX checks, and the per-row reasons it returned."""

    reasons: dict[int, list[str]] = field(default_factory=dict)


def _context(docs_dir: Path | None):  # type: ignore[no-untyped-def]
    ctx = gx.get_context(mode="ephemeral")
    with contextlib.suppress(Exception):  # progress bars are cosmetic
        ctx.variables.progress_bars = {"globally": False}  # type: ignore[assignment]
    if docs_dir is not None:
        ctx.add_data_docs_site(
            site_name="agency_reports",
            site_config={
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(Path(docs_dir).resolve()),  # GX needs absolute
                },
            },
        )
    return ctx


def check_header(path: Path, header: list[str], expected: list[str]) -> list[str]:
    """Extract-level: the header must be exactly the mapped columns. Returns problems.

    A set comparison (what GX's ExpectTableColumnsToMatchSet with exact_match asks), in plain
    Python: GX's imports and context cost seconds, and a header is checked before any row
    is read, by `validate` and `run` alike."""
    problems: list[str] = []
    dups = sorted({c for c in header if header.count(c) > 1})
    for c in dups:
        problems.append(f"{path.name}: column {c!r} appears more than once")
    have, want = set(header), set(expected)
    for c in dict.fromkeys(expected):
        if c not in have:
            problems.append(f"{path.name}: mapped column {c!r} is missing")
    for c in dict.fromkeys(header):
        if c not in want:
            problems.append(f"{path.name}: unexpected column {c!r} is not in the mapping")
    return problems


class RowValidator:
    """One GX suite over status columns, reused for every chunk of a batch."""

    def __init__(self, status_columns: list[str], docs_dir: Path | None = None) -> None:
        self.columns = status_columns
        self._docs_dir = docs_dir
        self._vd: Any = None
        # status combination -> GX's reasons. Every status "ok" passes every expectation of
        # the suite by definition: known without GX, so a clean extract never loads it.
        self._verdicts: dict[tuple, list[str]] = {(OK,) * len(status_columns): []}

    @property
    def vd(self) -> Any:
        """The suite's validation definition, GX context and all, built on first use."""
        if self._vd is None:
            self.ctx = _context(self._docs_dir)
            ds = self.ctx.data_sources.add_pandas("extract_rows")
            bd = ds.add_dataframe_asset(name="row_status").add_batch_definition_whole_dataframe(
                "chunk"
            )
            suite = self.ctx.suites.add(gx.ExpectationSuite(name="row_level"))
            for col in self.columns:
                suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=col, value_set=[OK]))
            self._vd = self.ctx.validation_definitions.add(
                gx.ValidationDefinition(data=bd, suite=suite, name="rows")
            )
        return self._vd

    @vd.setter
    def vd(self, value: Any) -> None:
        self._vd = value

    @property
    def used_gx(self) -> bool:
        """GX has judged a row (some row had a problem): its context is built."""
        return self._vd is not None

    def check(self, status: pd.DataFrame) -> RowCheck:
        """Per-row reasons, keyed by row position in `status`.

        GX validates each distinct combination of statuses once per batch: a chunk holds a
        handful (most rows are all "ok") and later chunks mostly repeat earlier ones. The
        suite's verdict on a combination is a function of the combination alone, so it is its
        verdict on every row carrying it: the reasons are exactly those of a row-by-row run,
        without paying GX's fixed cost (~1 s) on every chunk.
        """
        out = RowCheck()
        if status.empty:
            return out
        status = status[self.columns].reset_index(drop=True)
        codes, combos = pd.factorize(pd.MultiIndex.from_frame(status.astype(object)))
        keys = [tuple(c) for c in combos]
        new = [i for i, k in enumerate(keys) if k not in self._verdicts]
        if new:
            if len(self._verdicts) > _MAX_VERDICTS:  # bounded, whatever the extract
                self._verdicts = {(OK,) * len(self.columns): []}
            first = np.full(len(keys), -1, dtype=np.int64)
            first[codes[::-1]] = np.arange(len(codes))[::-1]
            distinct = status.iloc[first[new]].reset_index(drop=True)
            res = self.vd.run(
                batch_parameters={"dataframe": distinct},
                result_format={"result_format": "COMPLETE", "return_unexpected_index_query": False},
            )
            found: dict[int, list[str]] = {j: [] for j in range(len(new))}
            for r in res.results:
                col = r.expectation_config.kwargs["column"]
                idx = r.result.get("unexpected_index_list") or []
                vals = r.result.get("unexpected_list") or []
                for i, v in zip(idx, vals, strict=False):
                    found[int(i)].append(f"{col}: {v}")
            for j, i in enumerate(new):
                self._verdicts[keys[i]] = found[j]
        verdicts = [self._verdicts[k] for k in keys]
        bad_groups = [g for g, v in enumerate(verdicts) if v]
        if bad_groups:
            for pos in np.flatnonzero(np.isin(codes, bad_groups)):
                out.reasons[int(pos)] = list(verdicts[int(codes[pos])])
        return out

    def write_data_docs(self, status: pd.DataFrame, batch_id: str) -> None:
        """Summary validation over the whole batch's statuses, rendered as GX Data Docs."""
        vd = self.vd  # builds the context on a batch whose every row was "ok"
        cp = self.ctx.checkpoints.add(
            gx.Checkpoint(
                name=f"batch_{batch_id}",
                validation_definitions=[vd],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="docs")],
                result_format="SUMMARY",
            )
        )
        cp.run(batch_parameters={"dataframe": status.reset_index(drop=True)})


def write_report(path: Path, report: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str), encoding="utf-8")
    return path
