"""`joinedup-bridge validate`: every check `run` makes, on every row, writing nothing.

Extract level (readable, header = the mapping's columns, with one hint line from
ig_bridge.sniff when the delimiter or encoding is wrong), then each chunk through
ig_bridge.rowcheck exactly as `run` does: counts per field and reason, rows accepted and
quarantined (with their reasons). Needs no key: nothing is encoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ig_bridge.reader import ExtractUnreadable, iter_chunks, read_header
from ig_bridge.rowcheck import ROW_STATUS, FieldProblems, SeenIds, check_chunk
from ig_bridge.sniff import sniff
from ig_bridge.validate import RowValidator, check_header
from schemas.mapping import Mapping, MappingError, load_mapping

#: A field with problems in more than this share of rows is flagged: a wrong date format or a
#: mis-mapped column, not noisy data.
HIGH_PROBLEM_SHARE = 0.25


def extract_problems(path: Path, mapping: Mapping) -> list[str]:
    """Extract-level problems (empty: the rows can be read). A wrong delimiter or encoding gives
    its hint and one summary line instead of a line per missing column."""
    try:
        header = read_header(path, mapping.source)
    except ExtractUnreadable as exc:
        return [*sniff(path, mapping.source, mapping.source_columns), str(exc)]
    problems = check_header(path, header, mapping.source_columns)
    if not problems:
        return []
    hints = sniff(path, mapping.source, mapping.source_columns)
    if not hints:
        return problems
    missing = sum(1 for p in problems if "is missing" in p)
    return [
        *hints,
        f"{path.name}: the header does not match the mapping ({missing} of "
        f"{len(mapping.source_columns)} mapped columns not found as read now)",
    ]


@dataclass
class DryRun:
    file: str
    problems: list[str] = field(default_factory=list)  # extract-level: `run` would refuse
    rows_read: int = 0
    rows_accepted: int = 0
    rows_quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # quarantine reason -> rows
    fields: FieldProblems = field(default_factory=FieldProblems)
    quarantined_lines: list[tuple[int | None, str]] = field(default_factory=list)  # first 20
    hints: list[str] = field(default_factory=list)
    min_identifying_fields: int = 0

    @property
    def refused(self) -> bool:
        return bool(self.problems)

    def warnings(self) -> list[str]:
        """Fields whose problem share suggests the mapping, not the data, is wrong."""
        out = []
        accepted = max(self.rows_accepted, 1)
        for name, n in self.fields.by_field().items():
            if n > HIGH_PROBLEM_SHARE * accepted and n >= 3:
                top = max(self.fields.counts[name].items(), key=lambda kv: kv[1])[0]
                what = (
                    "check the mapping's date_formats"
                    if "date" in top
                    else "check the mapping (is the right column mapped?)"
                )
                out.append(
                    f"{name}: problems in {n:,} of {self.rows_accepted:,} accepted rows "
                    f"(mostly {top}): {what}"
                )
        if self.rows_read and self.rows_quarantined > HIGH_PROBLEM_SHARE * self.rows_read:
            out.append(f"{self.rows_quarantined:,} of {self.rows_read:,} rows would be quarantined")
        return out


def dry_run(extract_path: Path | str, mapping_path: Path | str) -> DryRun:
    """Every row check of `run` on the whole extract; nothing written, no key needed."""
    path = Path(extract_path)
    out = DryRun(file=str(path))
    try:
        mapping = load_mapping(mapping_path)
    except MappingError as exc:
        out.problems = [str(exc)]
        return out
    out.min_identifying_fields = mapping.min_identifying_fields
    out.problems = extract_problems(path, mapping)
    if out.problems:
        return out
    validator = RowValidator(list(ROW_STATUS), None)
    policies = mapping.payload_policies()
    seen = SeenIds()
    try:
        for chunk in iter_chunks(path, mapping.source):
            out.rows_read += chunk.rows_read
            for m in chunk.malformed:
                r = m.reason.split(":")[0]
                out.reasons[r] = out.reasons.get(r, 0) + 1
                out.rows_quarantined += 1
                if len(out.quarantined_lines) < 20:
                    out.quarantined_lines.append((m.line, m.reason))
            raw = chunk.frame.reset_index(drop=True)
            if raw.empty:
                continue
            checked = check_chunk(raw, chunk.lines, mapping, policies, seen, validator)
            for pos in sorted(checked.reasons):
                row_reasons = [r for r in checked.reasons[pos] if r.split(":")[0] in ROW_STATUS]
                for r in row_reasons:
                    out.reasons[r] = out.reasons.get(r, 0) + 1
                if len(out.quarantined_lines) < 20:
                    out.quarantined_lines.append(
                        (int(chunk.lines[pos]), "; ".join(checked.reasons[pos]))
                    )
            good = checked.good
            for name, st in checked.field_status.items():
                out.fields.add(name, st[good], chunk.lines[good])
            out.rows_accepted += int(good.sum())
            out.rows_quarantined += int((~good).sum())
    except ExtractUnreadable as exc:
        out.problems = [str(exc)]
        return out
    if out.rows_read == 0:
        out.problems = [f"{path.name}: empty file (header only, no rows)"]
    undecodable = sum(n for r, n in out.reasons.items() if r.startswith("undecodable"))
    if undecodable:
        out.hints = sniff(path, mapping.source, mapping.source_columns)
    return out
