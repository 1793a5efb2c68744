"""Render each agency's onboarding mapping (schemas/agencies/<code>.yaml) from its AgencySpec.

The spec is the single source of truth for both the extract and its mapping, so the two cannot
drift; tests also check the committed YAML lists exactly the extract's columns.
"""

from __future__ import annotations

import json
from pathlib import Path

from synthetic_data.agency_specs import SPECS, AgencySpec
from synthetic_data.agency_vocabularies import CODE_PATTERNS, vocabulary

# Default relationship for slots whose extract has no relationship column of its own.
SLOT_DEFAULTS = {
    "mother": "mother",
    "other_party": "partner",
    "contact1": "parent",
    "contact2": "parent",
    "parent1": "parent",
    "parent2": "parent",
    "lead_adult": "parent",
    **{f"member{k}": "household_member" for k in range(1, 5)},
}


def _q(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)  # JSON scalars are valid YAML


def render_mapping(spec: AgencySpec) -> str:
    lines = [
        f"# Onboarding mapping for the synthetic {spec.name} extract.",
        "# Generated from synthetic_data/agency_specs.py (python -m synthetic_data.cli mappings);",
        "# the format is fixed by docs/contracts.md (mapping_version 1).",
        "mapping_version: 1",
        "agency:",
        f"  code: {spec.code}",
        f"  name: {_q(spec.name)}",
        f"  kind: {spec.kind}",
        f"schedule: {_q(spec.schedule)}",
        "source:",
        f"  format: {spec.file_format}",
    ]
    if spec.file_format == "csv":
        lines += [
            f"  encoding: {spec.encoding}",
            f"  delimiter: {_q(spec.delimiter)}",
            '  quotechar: "\\""',
        ]
    lines += [
        f"  date_formats: [{_q(spec.date_format)}]",
        f"  extract_kind: {spec.extract_kind}",
        "columns:",
    ]
    for c in spec.columns:
        entry: dict[str, object] = {"source": c.source}
        if c.field is not None:
            entry["field"] = c.field
        entry["class"] = c.cls
        if c.person != "subject":
            entry["person"] = c.person
        values = vocabulary(spec.code, c.field) if c.cls == "payload" and c.field else None
        if values is not None:  # closed: anything else is nulled
            entry["values"] = list(values)
        if c.cls == "payload" and c.field in CODE_PATTERNS:
            entry["pattern"] = CODE_PATTERNS[c.field]
        lines.append("  - {" + ", ".join(f"{k}: {_q(v)}" for k, v in entry.items()) + "}")
    slots = sorted({c.person for c in spec.columns if c.person != "subject"})
    if slots:
        lines.append("related_persons:")
        for s in slots:
            rel = spec.related_persons.get(s, SLOT_DEFAULTS.get(s, "household_member"))
            lines.append(f"  {s}: {{relationship: {rel}}}")
    return "\n".join(lines) + "\n"


def write_mappings(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for code, spec in SPECS.items():
        path = out_dir / f"{code.lower()}.yaml"
        path.write_text(render_mapping(spec), encoding="utf-8")
        paths.append(path)
    return paths
