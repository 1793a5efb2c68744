"""Why an extract does not read as its mapping says: one clear hint, not 25 missing columns.

Looks at the first megabyte only: byte-order marks and NUL bytes (UTF-16, binary files),
strict decoding in the declared encoding (else cp1252?), and the delimiter (`csv.Sniffer`, then
which candidate delimiter splits the header into the mapped columns). Hints name the mapping
key to set; they never quote the file's content.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
from pathlib import Path

from schemas.mapping import SourceSpec

SAMPLE = 1 << 20
_DELIMS = (",", ";", "\t", "|")
_MAGIC = (
    (b"PAR1", "a Parquet file: set `format: parquet` in the mapping's source"),
    (b"PK\x03\x04", "a zip or spreadsheet (xlsx) file: export the sheet as CSV"),
    (b"\xd0\xcf\x11\xe0", "an old Excel (xls) file: export the sheet as CSV"),
    (b"%PDF", "a PDF document, not an extract"),
)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _name(d: str) -> str:
    return "tab" if d == "\t" else repr(d)


def _yaml(d: str) -> str:
    return '"\\t"' if d == "\t" else repr(d)


def _codec(name: str) -> str:
    return codecs.lookup(name).name


def encoding_hint(path: Path, source: SourceSpec, head: bytes) -> tuple[str | None, str]:
    """(hint or None, the encoding the sample most likely is in)."""
    declared = _codec(source.encoding)
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return f"{path.name}: looks like {what}", declared
    for bom, enc in _BOMS:
        if head.startswith(bom):
            if not declared.startswith(enc):
                return (
                    f"{path.name}: looks like {enc.upper()} text (byte-order mark): set "
                    f"`encoding: {enc}` in the mapping's source"
                ), enc
            return None, declared
    if not head:
        return None, declared
    nul = head.count(0) / len(head)
    wide = declared.startswith(("utf-16", "utf-32"))
    if nul > 0.2 and not wide:
        even, odd = head[0::2].count(0), head[1::2].count(0)
        if max(even, odd) > 0.8 * (len(head) // 2):
            enc = "utf-16-be" if even > odd else "utf-16-le"
            return (
                f"{path.name}: looks like UTF-16 text without a byte-order mark: set "
                f"`encoding: {enc}` in the mapping's source"
            ), enc
        return f"{path.name}: looks like a binary file, not CSV text", declared
    if wide and nul == 0:
        return (
            f"{path.name}: has no NUL bytes, so it is not {declared.upper()}: set "
            "`encoding: utf-8` (or cp1252) in the mapping's source"
        ), "utf-8"
    # Text has almost no C0 control bytes besides tab, CR, LF (and form feed, ESC).
    ctrl = sum(head.count(b) for b in (*range(0, 9), 11, *range(14, 27), *range(28, 32)))
    if not wide and (nul > 0.01 or ctrl > 0.01 * len(head)):
        return f"{path.name}: looks like a binary file, not CSV text", declared
    try:
        codecs.getincrementaldecoder(declared)().decode(head, final=False)
    except UnicodeDecodeError:
        if declared == "utf-8":
            try:
                head.decode("cp1252")
            except UnicodeDecodeError:
                return (
                    f"{path.name}: is not valid {declared} (and not cp1252): check the "
                    "`encoding` in the mapping's source"
                ), declared
            return (
                f"{path.name}: is not valid utf-8 but reads as Windows-1252: set "
                "`encoding: cp1252` in the mapping's source"
            ), "cp1252"
        return (
            f"{path.name}: is not valid {declared}: check the `encoding` in the mapping's source"
        ), declared
    return None, declared


def _header_fields(text: str, delimiter: str, quotechar: str | None) -> list[str]:
    first = text.splitlines()[0] if text else ""
    reader = csv.reader(
        io.StringIO(first),
        delimiter=delimiter,
        quotechar=quotechar or '"',
        quoting=csv.QUOTE_MINIMAL if quotechar else csv.QUOTE_NONE,
    )
    return [f.strip() for f in next(reader, [])]


def delimiter_hint(path: Path, source: SourceSpec, text: str, expected: list[str]) -> str | None:
    """A hint when another delimiter splits the header into (more of) the mapped columns."""
    if not text.strip():
        return None
    want = set(expected)
    declared = len(want & set(_header_fields(text, source.delimiter, source.quotechar)))
    guess = None
    with contextlib.suppress(csv.Error):
        guess = csv.Sniffer().sniff(text[: 64 << 10], delimiters="".join(_DELIMS)).delimiter
    scores = {d: len(want & set(_header_fields(text, d, source.quotechar))) for d in _DELIMS}
    best = max(scores, key=lambda d: (scores[d], d == guess))
    if best != source.delimiter and scores[best] > declared:
        return (
            f"{path.name}: looks like {_name(best)}-delimited: set `delimiter: "
            f"{_yaml(best)}` in the mapping's source ({scores[best]} of {len(want)} mapped "
            f"columns found that way, {declared} with {_name(source.delimiter)})"
        )
    if guess and guess != source.delimiter and declared == 0:
        return (
            f"{path.name}: looks like {_name(guess)}-delimited: set `delimiter: "
            f"{_yaml(guess)}` in the mapping's source"
        )
    return None


def sniff(path: Path | str, source: SourceSpec, expected: list[str]) -> list[str]:
    """Hints (one line each) for an extract that does not read as its mapping declares."""
    path = Path(path)
    if source.format != "csv":
        return []
    try:
        with path.open("rb") as fh:
            head = fh.read(SAMPLE)
    except OSError:
        return []
    hint, enc = encoding_hint(path, source, head)
    hints = [hint] if hint else []
    if hint and ("binary" in hint or any(m in hint for _, m in _MAGIC)):
        return hints
    text = codecs.getincrementaldecoder(enc)(errors="replace").decode(head, final=False)
    d_hint = delimiter_hint(path, source, text.removeprefix("\ufeff"), expected)
    if d_hint:
        hints.append(d_hint)
    return hints
