"""Protocol and role files: the shipped ones load; bad ones fail naming file and key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from governance.policy import (
    PROTOCOLS_DIR,
    ROLES_FILE,
    ConsentRule,
    PolicyError,
    load_payload_fields,
    load_protocol,
    load_protocols,
    load_roles,
)


def test_shipped_protocols_and_roles_load() -> None:
    protos = load_protocols()
    assert set(protos) == {
        "early_help_family_support",
        "s47_child_protection_enquiry",
        "mash_information_sharing",
        "involvement_index",
    }
    payload = load_payload_fields()
    for p in protos.values():
        for fields in p.agencies.values():
            assert set(fields) <= payload
    assert protos["early_help_family_support"].consent_rule is ConsentRule.REQUIRED
    assert protos["mash_information_sharing"].break_glass.allowed
    roles = load_roles()
    assert not roles["analyst"].row_level
    assert roles["ig_lead"].receives_alerts


def _write_variant(tmp_path: Path, edit: dict, name: str = "mash_information_sharing") -> Path:
    doc = yaml.safe_load((PROTOCOLS_DIR / f"{name}.yaml").read_text())
    for key, value in edit.items():
        if value is _DELETE:
            doc.pop(key)
        else:
            doc[key] = value
    out = tmp_path / f"{name}.yaml"
    out.write_text(yaml.safe_dump(doc))
    return out


_DELETE = object()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"agencies": {"SCH": ["attendance_pct", "pupil_name"]}}, "agencies.SCH.1"),
        ({"agencies": {"NHS": ["event_date"]}}, "agencies"),
        ({"roles": ["practitioner", "superuser"]}, "roles"),
        ({"legal_gateway": "GDPR_art_99"}, "legal_gateway"),
        ({"legal_gateway": None}, "needs a legal_gateway"),
        ({"consent_rule": "required"}, "break_glass.allowed needs"),
        ({"break_glass": {"allowed": True}}, "break_glass"),
        ({"colour": "blue"}, "colour"),
        ({"purpose": _DELETE}, "purpose"),
        ({"review_date": "2025-01-01"}, "review_date"),
        ({"id": "something_else"}, "must match the file name"),
    ],
)
def test_bad_protocol_error_names_file_and_key(tmp_path: Path, edit: dict, expected: str) -> None:
    path = _write_variant(tmp_path, edit)
    with pytest.raises(PolicyError) as exc:
        load_protocol(path)
    msg = str(exc.value)
    assert str(path) in msg
    assert expected in msg


def test_protocol_naming_non_row_level_role_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "protocols"
    d.mkdir()
    _write_variant(d, {"roles": ["practitioner", "analyst"]})
    with pytest.raises(PolicyError, match=r"roles\.1: role 'analyst' never sees person-level"):
        load_protocols(d)


def test_invalid_yaml_and_missing_role(tmp_path: Path) -> None:
    bad = tmp_path / "involvement_index.yaml"
    bad.write_text("id: [unclosed\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_protocol(bad)
    roles = yaml.safe_load(ROLES_FILE.read_text())
    del roles["roles"]["ig_lead"]
    rf = tmp_path / "roles.yaml"
    rf.write_text(yaml.safe_dump(roles))
    with pytest.raises(PolicyError, match=r"roles: missing \['ig_lead'\]"):
        load_roles(rf)
    roles["roles"]["ig_lead"] = {
        "doc": "x",
        "row_level": "maybe",
        "may_break_glass": False,
        "receives_alerts": True,
    }
    rf.write_text(yaml.safe_dump(roles))
    with pytest.raises(PolicyError, match=r"roles\.ig_lead\.row_level"):
        load_roles(rf)


def test_empty_protocol_dir(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no protocol files"):
        load_protocols(tmp_path)
    # a copy of the real directory loads the same protocols
    shutil.copytree(PROTOCOLS_DIR, tmp_path / "p")
    assert set(load_protocols(tmp_path / "p")) == set(load_protocols())
