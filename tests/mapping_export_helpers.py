"""Shared by the real-export mapping tests: writing a mapping file and ingesting its batches."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb
import pandas as pd
import yaml

from linkage.config import HubPaths
from linkage.ingest import ingest_landing


def _vals(series: pd.Series) -> list:
    """Values with every missing marker (None, NaN, pd.NA) as None."""
    return [None if pd.isna(v) else v for v in series]


def _write_mapping(folder: Path, doc: dict, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _hub(run: Path, mappings: Path, code: str) -> tuple[HubPaths, duckdb.DuckDBPyConnection]:
    """Ingest every landed batch with the hub's real ingest, reading this mappings folder."""
    paths = dataclasses.replace(HubPaths.for_run(run), mappings=mappings)
    report = ingest_landing(paths)
    assert [o.status for o in report.outcomes] == ["accepted"], report.outcomes
    return paths, duckdb.connect(str(paths.warehouse))
