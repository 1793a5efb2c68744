"""What the Airflow DAGs call that is not a stage itself: run-folder config, the bridge DAG's
task bodies (validate -> split/sign -> land), the hub DAG's per-batch ingest, and the asset names
that tie the two together.

Kept free of Airflow imports so it is testable (and usable by the demo) without a scheduler; the
DAG files in `dags/` stay thin wrappers around these functions. Heavy libraries (pandas, GX,
DuckDB, Splink) are imported inside the functions so DAG parsing only reads YAML.

Configuration (environment):
- ``JOINEDUP_RUN_DIR``: the run folder (docs/contracts.md layout); default ``var/airflow``
  relative to the working directory. Holds ``agency/<CODE>/``, ``landing/`` and ``hub/``.
- ``JOINEDUP_MAPPINGS_DIR``: onboarding mappings; default the packaged ``schemas/agencies``.
- ``JOINEDUP_LANDING_DIR`` / ``JOINEDUP_HUB_DIR`` / ``JOINEDUP_AGENCY_DIR``: override single
  parts of the run folder (production mounts them as separate volumes).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from schemas.agreement import AGREEMENT_FILE

log = logging.getLogger(__name__)

RUN_DIR_ENV = "JOINEDUP_RUN_DIR"
DEFAULT_RUN_DIR = "var/airflow"
EXTRACT_KINDS = ("snapshot", "delta")
ASSET_PREFIX = "joinedup-landing-"
HUB_DAG_ID = "hub_linkage"
EXTRACT_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet")


class ExtractNotFound(FileNotFoundError):
    """No extract to bridge: the message says where the bridge looked."""


def run_dir() -> Path:
    return Path(os.environ.get(RUN_DIR_ENV, DEFAULT_RUN_DIR)).resolve()


def mappings_dir() -> Path:
    from linkage.config import default_mappings_dir  # light: yaml and pathlib only

    return default_mappings_dir()


def landing_dir(base: Path | None = None) -> Path:
    env = os.environ.get("JOINEDUP_LANDING_DIR")
    return Path(env).resolve() if env else (base or run_dir()) / "landing"


def agency_dir(code: str, base: Path | None = None) -> Path:
    env = os.environ.get("JOINEDUP_AGENCY_DIR")  # a bridge container holds one agency only
    return Path(env).resolve() if env else (base or run_dir()) / "agency" / code


def hub_paths(
    base: Path | None = None,  # noqa: ANN201 - linkage.config.HubPaths
    mappings: Path | None = None,
):
    """The hub's folders for a run folder (`base`, default JOINEDUP_RUN_DIR) and a mappings
    folder (`mappings`, default JOINEDUP_MAPPINGS_DIR, else the packaged one)."""
    from linkage.config import HubPaths

    base = base or run_dir()
    hub = os.environ.get("JOINEDUP_HUB_DIR")
    return HubPaths(
        hub=Path(hub).resolve() if hub else base / "hub",
        landing=landing_dir(base),
        mappings=Path(mappings).resolve() if mappings else mappings_dir(),
    )


def asset_name(code: str) -> str:
    """The Asset a bridge DAG updates after each landing; the hub DAG is scheduled on them."""
    return f"{ASSET_PREFIX}{code.lower()}"


@dataclass(frozen=True)
class AgencyDagSpec:
    """What a bridge DAG needs at parse time: read straight from the mapping YAML, nothing
    heavier. Full validation happens in the validate task (schemas.mapping)."""

    code: str
    name: str
    schedule: str | None
    extract_kind: str
    mapping_path: Path


def agency_dag_specs(directory: Path | None = None) -> list[AgencyDagSpec]:
    """One spec per onboarded agency mapping (schemas/agencies/*.yaml), sorted by code."""
    directory = directory or mappings_dir()
    out: dict[str, AgencyDagSpec] = {}
    for path in sorted(directory.glob("*.yaml")):
        if path.name == AGREEMENT_FILE:  # the partnership's agreement, not an agency
            continue
        raw = yaml.safe_load(path.read_text("utf-8")) or {}
        try:
            code = str(raw["agency"]["code"])
        except (KeyError, TypeError):
            raise ValueError(f"{path}: agency.code missing") from None
        if code in out:
            raise ValueError(f"{path}: agency.code {code} already used by {out[code].mapping_path}")
        kind = (raw.get("source") or {}).get("extract_kind", "snapshot")
        out[code] = AgencyDagSpec(
            code=code,
            name=str(raw["agency"].get("name", code)),
            schedule=raw.get("schedule"),
            extract_kind=kind,
            mapping_path=path,
        )
    return [out[c] for c in sorted(out)]


# --------------------------------------------------------------------------- agency side
def resolve_extract(code: str, given: str | None = None, base: Path | None = None) -> Path:
    """The extract to bridge: the given path, else the newest file in the agency's inbox
    (``agency/<CODE>/inbox/``), else the synthetic population's extract (the demo layout)."""
    if given:
        p = Path(given)
        if not p.is_file():
            raise ExtractNotFound(f"extract {p} does not exist (agency {code})")
        return p
    base = base or run_dir()
    looked = [agency_dir(code, base) / "inbox", base / "population" / "extracts" / code]
    for folder in looked:
        files = (
            [f for f in folder.glob("*") if f.is_file() and f.suffix in EXTRACT_SUFFIXES]
            if folder.is_dir()
            else []
        )
        if files:
            return max(files, key=lambda f: (f.stat().st_mtime, f.name))
    raise ExtractNotFound(
        f"no extract given and none found for agency {code} in "
        + " or ".join(str(f) for f in looked)
    )


def validate_task(
    code: str, mapping_path: Path | str, extract_path: str | None = None, base: Path | None = None
) -> dict[str, Any]:
    """The bridge's dry run (`joinedup-bridge validate`, ig_bridge.dryrun): the extract-level
    checks and every row check `run` makes, nothing encoded. A refused extract gets a report
    at the agency and raises ExtractRefused naming it; otherwise the counts per field and
    reason (never a value) go to a `validated-` report at the agency and to the task's
    result, with the dry run's warnings (a field wrong in most rows: the mapping's date
    format, a mis-mapped column), so the data officer sees them before the batch is split."""
    from datetime import UTC, datetime

    from ig_bridge.dryrun import dry_run
    from ig_bridge.split import ExtractRefused
    from ig_bridge.validate import write_report

    extract = resolve_extract(code, extract_path, base)
    adir = agency_dir(code, base)
    res = dry_run(extract, mapping_path)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if res.refused:
        report = write_report(
            adir / "reports" / f"refused-{code}-{stamp}.json",
            {"file": str(extract), "status": "refused", "problems": res.problems},
        )
        raise ExtractRefused(report, res.problems)
    summary = {
        "rows_read": res.rows_read,
        "rows_would_accept": res.rows_accepted,
        "rows_would_quarantine": res.rows_quarantined,
        "quarantine_reasons": res.reasons,
        "field_problems": res.fields.counts,
        "warnings": res.warnings(),
    }
    report = write_report(
        adir / "reports" / f"validated-{code}-{stamp}.json",
        {"file": str(extract), "status": "validated", **summary, "hints": res.hints},
    )
    for w in summary["warnings"]:
        log.warning("%s dry run: %s", code, w)
    return {"agency": code, "extract": str(extract), "report": str(report), **summary}


def split_sign_task(
    code: str,
    mapping_path: Path | str,
    extract: str,
    extract_kind: str,
    base: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the bridge into the agency's outbox (agency-side only). Quarantine stays at the
    agency; what the outbox holds is exactly what will land."""
    from ig_bridge.split import run_bridge

    if extract_kind not in EXTRACT_KINDS:
        raise ValueError(f"extract_kind must be one of {EXTRACT_KINDS}, got {extract_kind!r}")
    adir = agency_dir(code, base)
    res = run_bridge(
        extract, mapping_path, adir, adir / "outbox", extract_kind=extract_kind, progress=progress
    )
    return {
        "agency": code,
        "batch_id": res.batch_id,
        "sequence": res.sequence,
        "outbox": str(res.landed_path),
        "report": str(res.report_path),
        "rows": {
            "read": res.rows_read,
            "accepted": res.rows_accepted,
            "quarantined": res.rows_quarantined,
        },
        "quarantine": str(res.quarantine_path) if res.quarantine_path else None,
    }


def land_task(split: dict[str, Any], base: Path | None = None) -> dict[str, Any]:
    """Move a sealed batch from the agency outbox into the agency's drop area of the landing
    zone, atomically (ig_bridge.landing.land_sealed_batch). Safe to retry: an already-landed
    identical batch is success."""
    from ig_bridge.landing import land_sealed_batch

    code, batch_id = split["agency"], split["batch_id"]
    final = land_sealed_batch(split["outbox"], landing_dir(base), code, batch_id)
    return {
        "agency": code,
        "batch_id": batch_id,
        "sequence": split["sequence"],
        "landed": str(final),
        "rows": split["rows"],
    }


# --------------------------------------------------------------------------- hub side
def apply_rekeys(
    base: Path | None = None,
    mappings: Path | None = None,
) -> list[dict[str, Any]]:
    """Apply every re-keying batch waiting in `rekey_landing/` (record-ref key rotation,
    docs/keys.md), before the run ingests anything: an agency's first snapshot under its new
    ref key must find the hub's refs already moved, or every record would look new and the
    old ones retire. A refused batch is moved to the refused area with its reason, like any."""
    from linkage.rekey import apply_pending_rekeys

    outcomes = [asdict(o) for o in apply_pending_rekeys(hub_paths(base, mappings))]
    for o in outcomes:
        log.info(
            "re-keying batch %s (%s): %s %s",
            o["batch_id"],
            o["agency"],
            o["status"],
            o["reason_code"] or "",
        )
    return outcomes


def pending_batch_dirs(base: Path | None = None, mappings: Path | None = None) -> list[str]:
    """Take every landed batch into hub custody (hub/incoming/, linkage.custody) and list the
    hub-private batch folders, in per-agency sequence order."""
    from linkage.ingest import pending_batches

    return [str(b) for _agency, b in pending_batches(hub_paths(base, mappings).ensure())]


def ingest_one(
    batch_dir: str,
    base: Path | None = None,
    mappings: Path | None = None,
) -> dict[str, Any]:
    """Ingest one batch in hub custody (as `pending_batch_dirs` listed it), after any earlier
    one of the same agency, so mapped ingest tasks give the same result whatever order they
    run in (stage_ingest skips batches already moved out of custody)."""
    from linkage.ingest import batches_in_custody
    from linkage.pipeline import stage_ingest

    paths = hub_paths(base, mappings)
    me = Path(batch_dir)
    same_agency = [b for a, b in batches_in_custody(paths) if a == me.parent.name]
    upto = same_agency[: same_agency.index(me) + 1] if me in same_agency else [me]
    summary = stage_ingest(paths, batch_dirs=[str(b) for b in upto])
    mine = [o for o in summary.get("outcomes", []) if o.get("batch_id") == me.name]
    return {
        "batch_dir": batch_dir,
        "outcome": mine[0] if mine else {"status": "already_moved"},
        "outcomes": summary.get("outcomes", []),
    }


def abandon_sequence_task(
    agency: str, sequence: int, reason: str, recorded_by: str, base: Path | None = None
) -> dict[str, Any]:
    """An operator records that `agency`'s batch `sequence` will never arrive (e.g. a bridge
    crashed after signing it); the batches held behind it then load, in order, at once.
    See linkage.sequence (also a CLI: `python -m linkage.sequence abandon`)."""
    from linkage.pipeline import stage_ingest
    from linkage.sequence import abandon_sequence

    paths = hub_paths(base)
    out = abandon_sequence(paths, agency, int(sequence), reason, recorded_by)
    out["released"] = stage_ingest(paths, batch_dirs=[]).get("outcomes", [])
    return out


HUB_STAGES = ("link_persons", "households", "marts", "report")


def run_stage(
    name: str, run_id: str, base: Path | None = None, mappings: Path | None = None
) -> dict[str, Any]:
    """Run one hub stage after ingest by name (HUB_STAGES), as the hub DAG's tasks and
    `joinedup-hub` both do. `report` is the governance stage (consent registry refresh, audit
    checkpoint, IG report: governance.hub_stage); the others are linkage.pipeline's."""
    if name not in HUB_STAGES:
        raise ValueError(f"unknown hub stage {name!r}; one of {', '.join(HUB_STAGES)}")
    if name == "report":
        from governance.hub_stage import report_stage

        return report_stage(run_id, base, mappings=mappings)
    from linkage import pipeline

    return getattr(pipeline, f"stage_{name}")(hub_paths(base, mappings), run_id)


def hub_outputs(base: Path | None = None, mappings: Path | None = None) -> dict[str, str]:
    """Where an analyst / IG lead finds the results of the last hub run."""
    paths = hub_paths(base, mappings)
    out = {
        "warehouse": str(paths.warehouse),
        "marts": str(paths.marts),
        "reports": str(paths.reports),
    }
    reports = (
        sorted(paths.reports.glob("*.html"), key=lambda p: p.stat().st_mtime)
        if paths.reports.exists()
        else []
    )
    if reports:
        out["latest_report"] = str(reports[-1])
    return out


def provision(base: Path, codes: list[str]) -> dict[str, Path]:
    """Keys for a demo/test partnership (one shared link key, per-agency ref and signing keys,
    public keys exported to the hub). Production agencies run `joinedup-bridge keys` instead."""
    from synthetic_data.parties import provision_partnership

    return provision_partnership(base, codes)


def summary_json(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, default=str)
