"""Stream an agency extract (CSV or Parquet) in chunks, never losing a malformed row.

CSV parsing is pyarrow's streaming reader; Parquet is read by record batches. Memory stays
bounded by the chunk size. Every physical record the parser yields is counted: it is either in
a chunk's frame or in that chunk's `malformed` list (ragged rows, unclosed quotes, undecodable
bytes, empty lines), each with its line number and a reason that never contains a value.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from schemas.mapping import SourceSpec

BLOCK_SIZE = 4 << 20  # bytes of CSV per chunk (~30-60k rows)
MAX_BLOCK_SIZE = 256 << 20  # a row may be this big (then it is read, its fields checked)
PARQUET_BATCH = 50_000
REPLACEMENT = "\ufffd"  # what undecodable bytes become, so the row can be quarantined


class ExtractUnreadable(Exception):
    """The extract cannot be read at all (missing, empty, no header)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class Malformed:
    line: int | None  # 1-based physical line in the file (CSV), None for Parquet
    record: int | None
    reason: str
    raw: str  # the raw text, kept at the agency only (quarantine) so nothing is lost


@dataclass
class Chunk:
    frame: pd.DataFrame  # source column names, str values, <NA> for empty
    lines: np.ndarray  # 1-based start line (CSV) or row number (Parquet) of each frame row
    records: np.ndarray  # 1-based data record number of each frame row
    malformed: list[Malformed] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return len(self.frame) + len(self.malformed)


class _Utf8Transcoder(io.RawIOBase):
    """Decode the declared encoding to UTF-8 for pyarrow, replacing undecodable bytes by U+FFFD.

    pyarrow's own transcoding fails the whole file on one bad byte; this keeps going so the row
    can be quarantined instead.
    """

    def __init__(self, raw: io.BufferedIOBase, encoding: str) -> None:
        self._raw = raw
        self._dec = codecs.getincrementaldecoder(encoding)(errors="replace")
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._bom_checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        while self._pos >= len(self._buf) and not self._eof:
            data = self._raw.read(1 << 20)
            if data:
                text = self._dec.decode(data)
            else:
                self._eof = True
                text = self._dec.decode(b"", final=True)
            if not self._bom_checked and text:
                text = text.removeprefix("\ufeff")
                self._bom_checked = True
            self._buf, self._pos = text.encode("utf-8"), 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _open_text(path: Path, encoding: str) -> io.BufferedReader:
    return io.BufferedReader(_Utf8Transcoder(path.open("rb"), encoding), buffer_size=1 << 20)


def read_header(path: Path | str, source: SourceSpec) -> list[str]:
    """Column names of the extract (extract-level checks run on these before any row)."""
    path = Path(path)
    if not path.exists():
        raise ExtractUnreadable(path, "file not found")
    if source.format == "parquet":
        try:
            return list(pq.ParquetFile(path).schema_arrow.names)
        except (pa.ArrowInvalid, OSError) as exc:
            reason = f"not a readable Parquet file ({type(exc).__name__})"
            raise ExtractUnreadable(path, reason) from None
    if path.stat().st_size == 0:
        raise ExtractUnreadable(path, "empty file (no header)")
    stream = _open_text(path, source.encoding)
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 16),
            parse_options=_parse_options(source, lambda _row: "skip"),
            convert_options=pacsv.ConvertOptions(include_columns=[]),
        )
        return list(reader.schema.names)
    except pa.ArrowInvalid as exc:
        if "Empty CSV" in str(exc):
            raise ExtractUnreadable(path, "empty file (no header)") from None
        raise ExtractUnreadable(path, "header cannot be parsed") from None
    finally:
        stream.close()


def _parse_options(source: SourceSpec, handler) -> pacsv.ParseOptions:  # type: ignore[no-untyped-def]
    return pacsv.ParseOptions(
        delimiter=source.delimiter,
        quote_char=source.quotechar if source.quotechar else False,
        double_quote=True,
        newlines_in_values=True,  # agency notes may hold line breaks inside quotes
        ignore_empty_lines=False,  # an empty line is a row to count, not to drop silently
        invalid_row_handler=handler,
    )


def _to_frame(table: pa.Table | pa.RecordBatch) -> pd.DataFrame:
    cols = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_timestamp(col.type):
            col = pc.cast(col, pa.date32())
        if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
            col = pc.cast(col, pa.string())
        col = pc.utf8_trim_whitespace(col)
        col = pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)
        cols[name] = col
    return pa.table(cols).to_pandas().astype("string")


def _csv_positions(
    batch: pa.RecordBatch, bad: list[Malformed], rec0: int, line0: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Record numbers and 1-based start lines of the valid rows of one parsed block.

    pyarrow tells us the record number of each invalid row (header = 1); valid rows fill the
    other record slots in order, and each record spans 1 + its embedded line breaks.
    """
    n = batch.num_rows
    total = n + len(bad)
    extra = np.zeros(n, dtype=np.int64)
    for col in batch.columns:
        extra += pc.fill_null(pc.count_substring(col, "\n"), 0).to_numpy(zero_copy_only=False)
    is_bad = np.zeros(total, dtype=bool)
    spans = np.zeros(total, dtype=np.int64)
    for m in bad:
        pos = (m.record or 0) - rec0
        if 0 <= pos < total:
            is_bad[pos] = True
            spans[pos] = m.raw.count("\n") + 1
    spans[~is_bad] = 1 + extra[: int((~is_bad).sum())]
    starts = line0 + np.concatenate(([0], np.cumsum(spans)[:-1])) if total else spans
    for m in bad:
        pos = (m.record or 0) - rec0
        if 0 <= pos < total:
            m.line = int(starts[pos])
    recs = rec0 + np.flatnonzero(~is_bad)
    return recs, starts[~is_bad], rec0 + total, line0 + int(spans.sum())


def iter_chunks(path: Path | str, source: SourceSpec) -> Iterator[Chunk]:
    """Yield chunks of the extract; rows read = sum(len(frame) + len(malformed)).

    A row bigger than pyarrow's block (a multi-megabyte field) makes pyarrow stop; the read
    then restarts with a bigger block, skipping the records already yielded, up to
    MAX_BLOCK_SIZE; past that the extract is refused naming the line.
    """
    path = Path(path)
    names = read_header(path, source)
    if source.format == "parquet":
        yield from _iter_parquet(path)
        return
    done_rec, block = 1, BLOCK_SIZE  # first record not yet yielded
    while True:
        try:
            for chunk in _iter_csv(path, source, names, block, done_rec):
                if chunk.rows_read:
                    done_rec = (
                        int(max([*chunk.records, *[m.record or 0 for m in chunk.malformed]])) + 1
                    )
                yield chunk
            return
        except _RowTooBig as exc:
            if block >= MAX_BLOCK_SIZE:
                raise ExtractUnreadable(
                    path,
                    f"a row starting near line {exc.line} is larger than "
                    f"{MAX_BLOCK_SIZE >> 20} MB (an oversized field or an unclosed quote)",
                ) from None
            block = min(block * 4, MAX_BLOCK_SIZE)


class _RowTooBig(Exception):  # noqa: N818 - internal signal, never leaves this module
    def __init__(self, line: int) -> None:
        self.line = line


def _iter_csv(
    path: Path, source: SourceSpec, names: list[str], block_size: int, skip_before: int
) -> Iterator[Chunk]:
    """Chunks of records numbered >= skip_before (earlier ones were yielded by a previous
    attempt with a smaller block)."""
    bad: list[Malformed] = []

    def handler(row) -> str:  # type: ignore[no-untyped-def]
        # pyarrow numbers records from 1 with the header as record 1.
        rec = row.number - 1 if row.number is not None and row.number > 0 else None
        if row.actual_columns == 1 and not (row.text or "").strip():
            reason = "empty line"
        elif row.actual_columns < row.expected_columns:
            reason = f"ragged row: {row.actual_columns} fields, expected {row.expected_columns}"
        else:
            reason = (
                f"ragged row: {row.actual_columns} fields, expected {row.expected_columns} "
                "(extra delimiter or unclosed quote)"
            )
        bad.append(Malformed(None, rec, reason, row.text or ""))
        return "skip"

    stream = _open_text(path, source.encoding)
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(use_threads=False, block_size=block_size),
            parse_options=_parse_options(source, handler),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
            ),
        )
        rec, cursor = 1, 2  # first data record and line, after a one-line header
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:
                if "straddl" in str(exc):
                    raise _RowTooBig(cursor) from None
                raise ExtractUnreadable(path, f"parse failure after line {cursor}: {exc}") from None
            recs, lines, rec, cursor = _csv_positions(batch, bad, rec, cursor)
            chunk = Chunk(frame=_to_frame(batch), lines=lines, records=recs, malformed=bad)
            bad = []
            if skip_before > 1:
                _drop_before(chunk, skip_before)
            _flag_suspect_rows(chunk)
            yield chunk
        if bad:  # invalid rows at the very end of the file
            empty = pa.RecordBatch.from_pydict({n: pa.array([], pa.string()) for n in names})
            _csv_positions(empty, bad, rec, cursor)
            chunk = Chunk(
                frame=pd.DataFrame({n: pd.Series([], dtype="string") for n in names}),
                lines=np.zeros(0, dtype=np.int64),
                records=np.zeros(0, dtype=np.int64),
                malformed=bad,
            )
            if skip_before > 1:
                _drop_before(chunk, skip_before)
            yield chunk
    finally:
        stream.close()


def _drop_before(chunk: Chunk, first: int) -> None:
    keep = chunk.records >= first
    chunk.frame = chunk.frame.loc[keep].reset_index(drop=True)
    chunk.lines, chunk.records = chunk.lines[keep], chunk.records[keep]
    chunk.malformed = [m for m in chunk.malformed if (m.record or 0) >= first]


def _flag_suspect_rows(chunk: Chunk) -> None:
    """Move rows that parsed but are damaged (undecodable bytes, all empty) to `malformed`."""
    frame = chunk.frame
    if frame.empty:
        return
    undecodable = np.zeros(len(frame), dtype=bool)
    reasons: dict[int, str] = {}
    for col in frame.columns:
        hit = frame[col].str.contains(REPLACEMENT, regex=False).fillna(False).to_numpy(dtype=bool)
        for i in np.flatnonzero(hit & ~undecodable):
            reasons[int(i)] = f"undecodable bytes for the declared encoding in column {col}"
        undecodable |= hit
    empty = frame.isna().all(axis=1).to_numpy()
    for i in np.flatnonzero(empty & ~undecodable):
        reasons[int(i)] = "empty line"
    if not reasons:
        return
    drop = np.zeros(len(frame), dtype=bool)
    for i, reason in sorted(reasons.items()):
        raw = "\x1f".join("" if pd.isna(v) else str(v) for v in frame.iloc[i].tolist())
        chunk.malformed.append(Malformed(int(chunk.lines[i]), int(chunk.records[i]), reason, raw))
        drop[i] = True
    chunk.frame = frame.loc[~drop].reset_index(drop=True)
    chunk.lines = chunk.lines[~drop]
    chunk.records = chunk.records[~drop]


def _iter_parquet(path: Path) -> Iterator[Chunk]:
    pf = pq.ParquetFile(path)
    start = 1
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH):
        frame = _to_frame(batch)
        rows = np.arange(start, start + len(frame), dtype=np.int64)
        chunk = Chunk(frame=frame, lines=rows, records=rows.copy())
        start += len(frame)
        _flag_suspect_rows(chunk)
        yield chunk
