"""Console tables of the linkage evaluation (benchmarks/evaluate_linkage.py): the quality
figures against their targets, the end-to-end figures and the losses by kind."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def render_breakdown(report: dict[str, Any], console: Console) -> None:
    b = report.get("breakdown")
    if not b:
        return
    console.print(f"lost at the bridge by reason: {b['lost_at_bridge_by_reason'] or 'none'}")
    m = b["missed_person_pairs"]
    console.print(f"missed cross-agency person pairs: {m['n_missed_cross_agency_pairs']}")
    for stage, d in m["by_stage"].items():
        console.print(f"  {stage}: {d['pairs']}; fields differing: {d['fields_differing']}")
    h = b["household_errors"]
    console.print(f"household pairs missed by kind: {h['missed_pairs']}")
    console.print(f"household pairs wrongly joined by kind: {h['false_pairs']}")


TARGETS = {
    "auto_match_precision": (">=", 0.999),
    "household_f1": (">=", 0.98),
    "pair_completeness": (">=", 0.995),
    "privacy_cost_f1": (">=", -0.002),
}


#: Issue 17's targets, end to end (quarantined records count as missed).
E2E_TARGETS = {
    "cross-agency F1 - plaintext F1 (end to end)": (">=", 0.0),
    "cross-agency recall": (">=", 0.95),
    "cross-agency precision": (">=", 0.99),
    "auto-match precision": (">=", 0.999),
    "blocking pair completeness": (">=", 0.99),
    "household F1": (">=", 0.95),
    "records lost at the bridge": ("<=", 0.001),
}


def e2e_values(report: dict[str, Any]) -> dict[str, float | None]:
    e = report["end_to_end"]
    base = e.get("plaintext_cross_agency")
    return {
        "cross-agency F1 - plaintext F1 (end to end)": None
        if base is None
        else e["person_cross_agency"]["f1"] - base["f1"],
        "cross-agency recall": e["person_cross_agency"]["recall"],
        "cross-agency precision": e["person_cross_agency"]["precision"],
        "auto-match precision": report["auto_match_precision"],
        "blocking pair completeness": e["pair_completeness"],
        "household F1": e["household_pairwise"]["f1"],
        "records lost at the bridge": e["records_lost_share"],
    }


def render_end_to_end(report: dict[str, Any], console: Console) -> None:
    e = report["end_to_end"]
    table = Table(
        title=f"end to end: {e['n_records']:,} exported records, "
        f"{e['n_lost_at_bridge']:,} lost at the bridge (counted as missed)"
    )
    for c in ("figure", "value", "target", "met"):
        table.add_column(c)
    for k, v in e2e_values(report).items():
        op, target = E2E_TARGETS[k]
        met = (
            "-" if v is None else ("yes" if (v >= target if op == ">=" else v <= target) else "NO")
        )
        table.add_row(k, "-" if v is None else f"{v:.4f}", f"{op} {target}", met)
    base = e.get("plaintext_cross_agency")
    if base is not None:
        table.add_row("(plaintext cross-agency F1, end to end)", f"{base['f1']:.4f}", "", "")
    for kind, sc in e.get("household_by_address_kind", {}).items():
        table.add_row(f"(household F1, {kind})", f"{sc['f1']:.4f}", "", "")
    if "group_quarters_pairs_wrongly_joined" in e:
        table.add_row(
            "(group-quarters pairs wrongly in one household)",
            str(e["group_quarters_pairs_wrongly_joined"]),
            "",
            "",
        )
    console.print(table)


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"linkage quality — {report['n_records']:,} records, "
        f"threshold {report['auto_match_probability']}"
    )
    for c in ("measure", "precision", "recall", "F1", "plaintext F1"):
        table.add_column(c, justify="left" if c == "measure" else "right")

    def row(name: str, key: str, base: str | None = None) -> None:
        s = report[key]
        b = report.get(base, {}).get("f1") if base else None
        table.add_row(
            name,
            f"{s['precision']:.4f}",
            f"{s['recall']:.4f}",
            f"{s['f1']:.4f}",
            "-" if b is None else f"{b:.4f}",
        )

    row("person pairs, cross-agency", "person_cross_agency", "plaintext_cross_agency")
    row("person pairs, all", "person_all_pairs", "plaintext_all_pairs")
    row("person clusters, B-cubed", "person_bcubed")
    row("household pairs", "household_pairwise")
    console.print(table)
    checks = Table(title="targets")
    for c in ("figure", "value", "target", "met"):
        checks.add_column(c)
    values = {
        "auto_match_precision": report["auto_match_precision"],
        "household_f1": report["household_pairwise"]["f1"],
        "pair_completeness": report["pair_completeness"],
        "privacy_cost_f1": report.get("privacy_cost_f1"),
    }
    for k, (op, target) in TARGETS.items():
        v = values[k]
        met = "-" if v is None else ("yes" if v >= target else "NO")
        checks.add_row(
            k,
            "-" if v is None else f"{v:+.4f}" if "cost" in k else f"{v:.4f}",
            f"{op} {target}",
            met,
        )
    checks.add_row(
        "scored-pair precision at threshold (before chaining guard)",
        f"{report['scored_pair_precision_at_threshold']:.4f}",
        "",
        "",
    )
    console.print(checks)
    console.print(f"false negatives by corruption: {report['false_negatives_by_corruption']}")
    console.print(f"false positives by kind: {report['false_positives_by_kind']}")
    render_breakdown(report, console)
    if "end_to_end" in report:
        render_end_to_end(report, console)
