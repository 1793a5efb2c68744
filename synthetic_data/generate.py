"""generate_population: the one entry point other code calls to build a population folder."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from synthetic_data.agencies import BUILDERS, Ctx
from synthetic_data.agency_specs import SPECS
from synthetic_data.corruption import CorruptionRates
from synthetic_data.extracts import build_agency_output, write_extract, write_table
from synthetic_data.messy import MESSY_RATES, PROFILES, MessyRates
from synthetic_data.messy import apply_population as messy_population
from synthetic_data.population import build_population

GENERATOR_VERSION = 1


@dataclass
class AgencySummary:
    code: str
    file: str
    file_format: str
    encoding: str | None
    records: int
    people: int
    bytes: int
    sha256: str


@dataclass
class PopulationSummary:
    out_dir: Path
    seed: int
    people: int
    households: int
    agencies: dict[str, AgencySummary] = field(default_factory=dict)
    ground_truth: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stage_rng(seed: int, stage: str) -> np.random.Generator:
    # One independent stream per stage: changing one agency never reshuffles the others.
    key = int.from_bytes(hashlib.sha256(stage.encode()).digest()[:4], "big")
    return np.random.default_rng([seed, key])


def generate_population(
    out_dir: Path,
    seed: int,
    people: int,
    rates: CorruptionRates | None = None,
    progress: bool = False,
    profile: str = "default",
) -> PopulationSummary:
    """Write extracts for every agency plus ground truth under `out_dir` (see docs/contracts.md).

    Deterministic: the same (seed, people, rates, profile) always gives byte-identical files.
    `profile` "messy" adds real exports' errors (synthetic_data.messy); "default" output is
    exactly what it was before profiles existed.
    """
    if not 10 <= people <= 2_000_000:
        raise ValueError(f"people must be between 10 and 2,000,000, got {people}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    messy = MessyRates() if profile == "messy" else None
    rates = rates or (MESSY_RATES if messy else CorruptionRates())
    out_dir = Path(out_dir)
    steps = 3 + len(SPECS)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        disable=not progress,
    ) as bar:
        task = bar.add_task("population", total=steps)
        pop = build_population(_stage_rng(seed, "population"), people)
        if messy is not None:
            pop = messy_population(pop, _stage_rng(seed, "messy:population"), messy)
        ctx = Ctx(pop)
        bar.advance(task)
        summary = PopulationSummary(out_dir, seed, len(pop.persons), len(pop.households))
        truths, related = [], []
        for code, spec in SPECS.items():
            bar.update(task, description=f"agency {code}")
            rng = _stage_rng(seed, f"agency:{code}")
            recs = BUILDERS[code](ctx, rng)
            out = build_agency_output(
                spec,
                recs,
                ctx,
                rng,
                rates,
                None if messy is None else (messy, _stage_rng(seed, f"messy:agency:{code}")),
            )
            path = write_extract(spec, out.extract, out_dir / "extracts" / code)
            summary.agencies[code] = AgencySummary(
                code,
                str(path.relative_to(out_dir)),
                spec.file_format,
                spec.encoding if spec.file_format == "csv" else None,
                len(out.extract),
                int(out.records_truth["person_id"].nunique()),
                path.stat().st_size,
                _sha256(path),
            )
            truths.append(out.records_truth)
            related.append(out.related_truth)
            bar.advance(task)

        bar.update(task, description="ground truth")
        gt = out_dir / "ground_truth"
        records = pd.concat(truths, ignore_index=True)
        # flags absent for an agency mean "could not happen there": False, not missing
        for col in [c for c in records.columns if c.startswith("cor_")]:
            records[col] = records[col].astype("boolean").fillna(False).astype(bool)
        write_table(records, gt / "records.parquet")
        write_table(pd.concat(related, ignore_index=True), gt / "related.parquet")
        write_table(pop.persons, gt / "persons.parquet")
        write_table(pop.households, gt / "households.parquet")
        write_table(pop.addresses, gt / "addresses.parquet")
        write_table(pop.address_history, gt / "address_history.parquet")
        summary.ground_truth = sorted(str(p.relative_to(out_dir)) for p in gt.glob("*.parquet"))
        bar.advance(task)

        meta = {
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "people": people,
            "reference_date": str(pop.ref_date),
            "rates": asdict(rates),
            "counts": {
                "persons": len(pop.persons),
                "households": len(pop.households),
                "records": {k: a.records for k, a in summary.agencies.items()},
            },
            "agencies": {k: asdict(a) for k, a in summary.agencies.items()},
            "quality_factors": {k: s.quality for k, s in SPECS.items()},
        }
        if messy is not None:  # the default's metadata stays as it was
            meta["profile"] = profile
            meta["messy_rates"] = asdict(messy)
        (out_dir / "population.json").write_text(
            json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        bar.advance(task)
    return summary
