"""Mapping loader: valid mappings load; each kind of mistake names the file and key path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from schemas.mapping import MappingError, hub_contract, load_all_mappings, load_mapping

BASE = {
    "mapping_version": 1,
    "agency": {"code": "SCH", "name": "Schools", "kind": "school"},
    "schedule": "@daily",
    "source": {
        "format": "csv",
        "encoding": "cp1252",
        "delimiter": ";",
        "quotechar": '"',
        "date_formats": ["%d/%m/%Y", "%Y-%m-%d"],
        "extract_kind": "snapshot",
    },
    "columns": [
        {"source": "PupilRef", "field": "record_id", "class": "identifier"},
        {"source": "Forename", "field": "given_name", "class": "identifier"},
        {"source": "DOB", "field": "date_of_birth", "class": "identifier"},
        {"source": "P1_Name", "field": "full_name", "class": "identifier", "person": "parent1"},
        {"source": "P1_Rel", "field": "relationship", "class": "identifier", "person": "parent1"},
        {"source": "Notes", "field": "case_notes", "class": "payload"},
        {"source": "Internal", "class": "drop"},
    ],
    "related_persons": {"parent1": {"relationship": "parent"}},
}


def write(tmp_path: Path, doc: dict, name: str = "sch.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return p


def test_valid_mapping_loads(tmp_path: Path) -> None:
    m = load_mapping(write(tmp_path, BASE))
    assert m.code == "SCH"
    assert m.source.encoding == "cp1252"
    assert m.record_id_column == "PupilRef"
    assert m.identifier_columns() == {
        "record_id": "PupilRef",
        "given_name": "Forename",
        "date_of_birth": "DOB",
    }
    assert m.identifier_columns("parent1") == {"full_name": "P1_Name", "relationship": "P1_Rel"}
    assert m.payload_columns() == {"case_notes": "Notes"}
    assert m.related_persons == {"parent1": "parent"}
    c = hub_contract(m)
    assert c.payload_fields == {"case_notes"}
    assert c.payload_columns == {"record_ref", "agency", "batch_id", "case_notes"}


def _mut(path: str, value):
    def apply(doc: dict) -> None:
        keys = path.split(".")
        obj = doc
        for k in keys[:-1]:
            obj = obj[int(k)] if isinstance(obj, list) else obj[k]
        last = keys[-1]
        if isinstance(obj, list):
            obj[int(last)] = value
        elif value is _DELETE:
            del obj[last]
        else:
            obj[last] = value

    return apply


_DELETE = object()

CASES = [
    ("unknown field", _mut("columns.1.field", "forename"), "columns[1].field"),
    ("payload as identifier", _mut("columns.1.field", "case_notes"), "columns[1].field"),
    ("unknown class", _mut("columns.1.class", "secret"), "columns[1].class"),
    ("unknown format", _mut("source.format", "xlsx"), "source.format"),
    ("unknown encoding", _mut("source.encoding", "klingon-8"), "source.encoding"),
    ("unknown slot", _mut("columns.3.person", "parent9"), "columns[3].person"),
    ("no record id", _mut("columns.0.field", "upn"), "columns"),
    ("dup source", _mut("columns.1.source", "PupilRef"), "columns[1].source"),
    ("wrong version", _mut("mapping_version", 2), "mapping_version"),
    ("unknown top key", _mut("extra", 1), "extra"),
    ("unknown column key", _mut("columns.1.colour", "red"), "columns[1].colour"),
    ("bad code", _mut("agency.code", "sch"), "agency.code"),
    (
        "bad relationship",
        _mut("related_persons.parent1.relationship", "boss"),
        "related_persons.parent1.relationship",
    ),
    ("bad date format", _mut("source.date_formats", ["dd/mm/yyyy"]), "source.date_formats[0]"),
]


@pytest.mark.parametrize(("label", "mutate", "key_path"), CASES, ids=[c[0] for c in CASES])
def test_mapping_errors_name_file_and_key(tmp_path: Path, label, mutate, key_path) -> None:
    doc = copy.deepcopy(BASE)
    mutate(doc)
    p = write(tmp_path, doc)
    with pytest.raises(MappingError) as exc:
        load_mapping(p)
    assert exc.value.key_path == key_path, str(exc.value)
    assert str(p) in str(exc.value)


def test_duplicate_field_for_person(tmp_path: Path) -> None:
    doc = copy.deepcopy(BASE)
    doc["columns"].append({"source": "Name2", "field": "given_name", "class": "identifier"})
    with pytest.raises(MappingError, match="mapped twice"):
        load_mapping(write(tmp_path, doc))


def test_load_all_rejects_duplicate_codes(tmp_path: Path) -> None:
    write(tmp_path, BASE, "a.yaml")
    write(tmp_path, BASE, "b.yaml")
    with pytest.raises(MappingError, match="already used"):
        load_all_mappings(tmp_path)
    (tmp_path / "b.yaml").unlink()
    assert set(load_all_mappings(tmp_path)) == {"SCH"}


def test_repo_mappings_are_valid() -> None:
    folder = Path(__file__).resolve().parents[1] / "schemas" / "agencies"
    if not list(folder.glob("*.yaml")):
        pytest.skip("no agency mappings committed yet")
    assert load_all_mappings(folder)
