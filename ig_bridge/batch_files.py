"""Files the bridge writes while it streams an extract: the agency's quarantine file and the
batch's Parquet files, each with a fixed schema."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.mapping import Mapping, load_canonical


class _Quarantine:
    """Quarantined rows streamed to the agency's quarantine file chunk by chunk (a bad extract
    must not hold every refused row in memory), renamed into place only when the batch lands."""

    SCHEMA = pa.schema(
        [
            pa.field("file", pa.string()),
            pa.field("line", pa.int64()),
            pa.field("record", pa.int64()),
            pa.field("reason", pa.string()),
            pa.field("raw", pa.string()),
        ]
    )

    def __init__(self, final: Path) -> None:
        self.final = final
        self.part = final.with_name(final.name + ".part")
        self.rows = 0
        self._buf: list[dict] = []
        self._writer: pq.ParquetWriter | None = None

    def append(self, row: dict) -> None:
        self._buf.append(row)
        self.rows += 1

    def flush(self) -> None:
        if not self._buf:
            return
        if self._writer is None:
            self.part.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.part, self.SCHEMA, compression="zstd")
        self._writer.write_table(pa.Table.from_pylist(self._buf, schema=self.SCHEMA))
        self._buf = []

    def close(self, keep: bool) -> Path | None:
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if keep and self.rows:
            os.replace(self.part, self.final)
            return self.final
        self.part.unlink(missing_ok=True)
        return None


def _payload_schema(mapping: Mapping) -> list[pa.Field]:
    canonical = mapping.canonical or load_canonical()  # agreement fields included
    types = {"date": pa.date32(), "number": pa.float64(), "boolean": pa.bool_()}
    return [
        pa.field(f, types.get(canonical.payload_fields[f]["type"], pa.string()))
        for f in mapping.payload_columns()
    ]


def _quarantine_rows(
    rows: _Quarantine,
    raw: pd.DataFrame,
    positions: list[int],
    reasons: dict[int, list[str]],
    lines: np.ndarray,
    records: np.ndarray,
    file_name: str,
) -> None:
    sub = raw.iloc[positions]
    for pos, values in zip(positions, sub.to_dict("records"), strict=True):
        rows.append(
            {
                "file": file_name,
                "line": int(lines[pos]),
                "record": int(records[pos]),
                "reason": "; ".join(reasons[pos]),
                "raw": json.dumps({k: (None if pd.isna(v) else v) for k, v in values.items()}),
            }
        )


class _Writer:
    """Append tables to one Parquet file with a fixed schema (the same for every batch, so an
    all-null column keeps its type)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.rows = 0

    def write(self, df: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(
            df[self.schema.names], schema=self.schema, preserve_index=False
        )
        self.writer.write_table(table)
        self.rows += len(df)

    def close(self) -> None:
        self.writer.close()
