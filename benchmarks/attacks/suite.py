"""Run every attack on one bridged-and-ingested run folder and score it against ground truth."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.attacks import chaining, frequency, structure
from benchmarks.attacks.data import (
    SALT,
    SEP,
    HubData,
    load_hub,
    population_plaintext,
    preimage,
    public_column_table,
    public_name_table,
    record_persons,
    sample_reference,
)
from benchmarks.attacks.graph import graph_attack
from benchmarks.attacks.pattern import pattern_mining
from benchmarks.attacks.score import AttackResult, score
from ig_bridge.encoding import load_encoding_spec

Step = Callable[[str], None]
QI = ("given", "family", "sex", "year", "month", "day", "district")


class Context:
    """The hub's data, the population plaintext and each record's truth, computed once."""

    def __init__(
        self, run: Path, warehouse: Path | None = None, spec: dict[str, Any] | None = None
    ):
        self.run = Path(run)
        self.spec = spec or load_encoding_spec()
        wh = warehouse or self.run / "hub" / "warehouse.duckdb"
        self.hub: HubData = load_hub(wh, self.spec)
        self.rec = self.hub.records
        self.person = record_persons(self.run, self.hub)  # evaluation only
        self.pop = population_plaintext(self.run)
        self._pre: dict[str, np.ndarray] = {}
        self.row_of = pd.Series(np.arange(len(self.pop)), index=self.pop.index)

    def pre(self, column: str) -> np.ndarray:
        """Plaintext of `column` per population person (row order of self.pop)."""
        if column not in self._pre:
            self._pre[column] = preimage(self.spec, self.pop, column)
        return self._pre[column]

    def truth(self, column: str) -> np.ndarray:
        pre = self.pre(column)
        idx = self.row_of.reindex(self.person).to_numpy()
        out = np.full(len(self.person), None, dtype=object)
        ok = ~np.isnan(idx)
        out[ok] = pre[idx[ok].astype(np.int64)]
        return out

    def ref(self, column: str, ref_ids: np.ndarray) -> np.ndarray:
        return self.pre(column)[self.row_of.loc[ref_ids].to_numpy()]

    def columns(self, prefix: str) -> list[str]:
        sec = {"tok_": "tokens", "blk_": "blocking", "bf_": "bloom"}[prefix]
        return [c for c in (self.spec.get(sec) or {}).get("columns", {}) if c in self.rec]


def _split_salted(guess: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A decoded salted value ("name<SEP>year" token, "name<SALT>year" filter) -> (names,
    years): a salted name the attack decodes gives the birth year away too."""
    if guess is None:
        return None, None
    names = np.full(len(guess), None, dtype=object)
    years = np.full(len(guess), None, dtype=object)
    for i, g in enumerate(guess):
        if g is None:
            continue
        name, sep, year = str(g).replace(SALT, SEP).partition(SEP)
        names[i] = name
        years[i] = year if sep else None
    return names, years


def _salted_by_year(spec: dict[str, Any], col: str) -> bool:
    conf = (spec.get("tokens") or {}).get("columns", {}).get(col) or {}
    return "dob_year" in (conf.get("sources") or [])


def _unsalted(spec: dict[str, Any], col: str) -> bool:
    conf = (spec.get("tokens") or {}).get("columns", {}).get(col) or {}
    return not {"dob_year", "dob_ym", "dob_iso"} & set(conf.get("sources") or [])


def _by_value(hub_values: pd.Series, mapping: dict[object, str]) -> np.ndarray:
    return frequency.guesses(hub_values.to_numpy(dtype=object), mapping)


def _frequency(
    rec: pd.DataFrame, col: str, label: str, table: pd.Series, truth: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, AttackResult]:
    """Frequency alignment of one column against `table`: the attacker's guesses (one draw of
    its tie order, for the combined attack) and the result scored as its expectation over tie
    orders (frequency.hit_probability), so a figure does not move with the tie order alone."""
    values = rec[col].to_numpy(dtype=object)
    guesses = frequency.guesses(values, frequency.align(values, table))
    p = frequency.hit_probability(values, table, truth)
    return guesses, score("frequency", col, label, values, guesses, truth, mask, p)


def _bloom_guesses(ctx: Context, col: str, ref_ids: np.ndarray, how: str) -> np.ndarray:
    conf = ctx.spec["bloom"]["columns"][col]
    vals = ctx.rec[col]
    notnull = vals.notna().to_numpy()
    codes, uniq = pd.factorize(vals[notnull])
    first = pd.Series(np.arange(notnull.sum())).groupby(codes).first().to_numpy()
    bits = ctx.hub.bloom_bits[col][notnull][first]
    weight = np.bincount(codes)
    ref = pd.Series(ctx.ref(col, ref_ids), dtype=object).dropna().value_counts()
    plain = ref.index.tolist()
    if how == "graph":
        found = graph_attack(bits, plain, conf)
    else:
        found = pattern_mining(bits, weight, plain, ref.to_numpy(dtype=np.float64), conf)
    mapping = {uniq[i]: v for i, v in found.items()}
    return _by_value(vals, mapping)


def combined(
    ctx: Context,
    guesses: dict[str, np.ndarray],
    ref_ids: np.ndarray,
    month_c: dict[str, frozenset[int]],
    day_c: dict[str, frozenset[int]],
) -> tuple[float, float, int]:
    """Records whose decoded quasi-identifiers point at exactly one reference person, and that
    person is the right one. Returns (records share, persons share, attackable records)."""
    # The attacker's own plaintext, independent of which tokens the spec has.
    pop = ctx.pop.loc[ref_ids]
    refp = pd.DataFrame(
        {
            "pid": ref_ids,
            "given": pop["given_name"].to_numpy(dtype=object),
            "family": pop["family_name"].str.replace(" ", "").to_numpy(dtype=object),
            "sex": pop["sex"].to_numpy(dtype=object),
            "year": pop["dob_year"].astype("string").to_numpy(dtype=object),
            "district": pop["postcode_district"].to_numpy(dtype=object),
            "month": pop["dob_month"].astype("float64").to_numpy(),
            "day": pop["dob_day"].astype("float64").to_numpy(),
        }
    )
    refp = refp.where(refp.notna(), None)
    att = np.isin(ctx.person, ref_ids)
    recs = pd.DataFrame({k: guesses[k] for k in ("given", "family", "sex", "year", "district")})
    none = pd.Series(None, index=ctx.rec.index, dtype=object)
    recs["mset"] = ctx.rec.get("tok_dob_month", none).map(month_c).to_numpy()
    recs["dset"] = ctx.rec.get("tok_dob_day", none).map(day_c).to_numpy()
    recs["pid_true"] = ctx.person
    recs = recs[att]
    hit = np.zeros(len(recs), dtype=bool)
    exact = ["given", "family", "sex", "year", "district"]
    known = recs[exact].notna()
    for pattern, grp in recs.groupby([known[c] for c in exact]):
        cols = [c for c, k in zip(exact, pattern, strict=True) if k]
        if not cols:
            continue
        g = grp.reset_index(names="row")
        m = g.merge(refp.dropna(subset=cols), on=cols, how="inner")
        if m.empty:
            continue
        ok = np.array(
            [
                (not isinstance(s, frozenset) or mo in s)
                and (not isinstance(d, frozenset) or dy in d)
                for s, mo, d, dy in zip(m["mset"], m["month"], m["dset"], m["day"], strict=True)
            ],
            dtype=bool,
        )
        m = m[ok]
        n = m.groupby("row")["pid"].agg(["count", "first"])
        uniq = n[n["count"] == 1]
        truth = g.set_index("row").loc[uniq.index, "pid_true"].to_numpy()
        good = uniq.index[uniq["first"].to_numpy() == truth]
        hit[recs.index.get_indexer(good)] = True
    persons = pd.Series(recs["pid_true"].to_numpy())
    share_p = persons[hit].nunique() / max(persons.nunique(), 1)
    return float(hit.mean()) if len(hit) else 0.0, float(share_p), int(len(hit))


def salt_chaining(
    ctx: Context,
    col: str,
    partners: list[str],
    how: str,
    ref_ids: np.ndarray,
    label: str,
    att: np.ndarray,
    shuffles: int = 5,
) -> AttackResult:
    """Frequency alignment of `col`'s values merged through `partners` (attacks.chaining)
    against the unsalted names' frequencies in the reference set, scored beyond what needs no
    name value: chance (the same alignment of classes of the same sizes whose members are
    drawn at random, mean of `shuffles` draws) or the hub's record links alone (the classes
    its joins give without the name column), whichever is larger. On a population where one
    surname is 13.5% of people (the synthetic one), guessing it for the biggest classes, or
    for the biggest joined families, is right that often whatever the encoding."""
    sections = ("tokens", "blocking")
    domains = {
        c: (conf.get("domain") or c)
        for sec in sections
        for c, conf in ((ctx.spec.get(sec) or {}).get("columns") or {}).items()
    }
    merged = chaining.merged_classes(ctx.rec, col, partners, domains)
    plain = chaining.unsalted(ctx.pop, ctx.spec, col)
    idx = ctx.row_of.reindex(ctx.person).to_numpy()
    truth = np.full(len(ctx.person), None, dtype=object)
    ok = ~np.isnan(idx)
    truth[ok] = plain[idx[ok].astype(np.int64)]
    table = frequency.reference_table(plain[ctx.row_of.loc[ref_ids].to_numpy()])
    result = _frequency(pd.DataFrame({col: merged}), col, label, table, truth, att)[1]
    rng = np.random.default_rng(len(merged))
    has = np.flatnonzero(pd.notna(merged))
    blind = []
    for _ in range(shuffles):
        shuffled = merged.copy()
        shuffled[has] = merged[has][rng.permutation(len(has))]
        frame = pd.DataFrame({col: shuffled})
        blind.append(_frequency(frame, col, label, table, truth, att)[1].records)
    chance = float(np.mean(blind))
    # What the hub's record links alone give (no value of the name, nor of a key implying
    # it): the classes are the joined records themselves. On the synthetic population one
    # surname is 13.5% of people and extended families link up, so the biggest joined
    # groups lean to it whatever the surname's encoding (30,000 people: 1.30% of records).
    name_keys = set(chaining.chains(ctx.spec).get(col, {}).get("name keys", []))
    links = [p for p in partners if p not in name_keys]
    linked = None
    if links:
        rec = ctx.rec.assign(_record=np.arange(len(ctx.rec)).astype(str))
        joined = chaining.merged_classes(rec, "_record", links, {**domains, "_record": "_"})
        joined = np.where(pd.notna(merged), joined, None)
        frame = pd.DataFrame({col: joined})
        linked = _frequency(frame, col, label, table, truth, att)[1].records
    return AttackResult(
        "chaining",
        f"{col} via {how}",
        label,
        max(0.0, result.records - max(chance, linked or 0.0)),
        result.values,
        result.n_records,
        result.n_values,
        chance=chance,
        raw=result.records,
        linked=linked,
    )


def run_suite(
    ctx: Context,
    overlaps: Iterable[float] = (0.25, 0.5, 1.0),
    seed: int = 1,
    step: Step | None = None,
    graph: bool = True,
) -> list[AttackResult]:
    step = step or (lambda _s: None)
    results: list[AttackResult] = []
    rec = ctx.rec
    truth = {
        c: ctx.truth(c) for c in ctx.columns("tok_") + ctx.columns("blk_") + ctx.columns("bf_")
    }
    everyone = ctx.person >= 0
    # Public census-style tables: no reference set needed.
    step("frequency vs public name tables")
    pub: dict[str, np.ndarray] = {}
    # Census-style age structure: what share of the population was born in each year.
    years = ctx.pop["dob_year"].dropna().astype(int).astype(str).value_counts(normalize=True)
    for col in ("tok_given_name", "tok_family_name"):
        if col not in rec:
            continue
        table = public_name_table(col[4:])
        if _salted_by_year(ctx.spec, col):  # names by birth year (e.g. ONS baby names)
            table = pd.Series(
                {f"{n}{SEP}{y}": a * b for n, a in table.items() for y, b in years.items()}
            )
        elif not _unsalted(ctx.spec, col):  # salted more finely: the generic table below
            continue
        pub[col], result = _frequency(rec, col, "public", table, truth[col], everyone)
        results.append(result)
    # Every other single-name column (canonical, phonetic, parts, Bloom filters; salted with
    # any part of the DOB and / or sex): public names x births by day (x sex) through the
    # bridge's preimage code.
    days = pd.to_datetime(ctx.pop["date_of_birth"]).dropna().dt.strftime("%Y-%m-%d")
    days = days.value_counts(normalize=True)
    sexes = ctx.pop["sex"].dropna().value_counts(normalize=True)  # census sex ratio
    for col in ctx.columns("tok_") + ctx.columns("bf_"):
        if col in pub:
            continue
        table = public_column_table(ctx.spec, col, days, sexes)
        if table is None or table.empty:
            continue
        results.append(_frequency(rec, col, "public", table, truth[col], everyone)[1])
    step("structure: year group, calendar")
    none = np.full(len(rec), None, dtype=object)
    dyears = structure.decode_years(rec) if "tok_dob_year" in rec else {}
    month_c: dict[str, frozenset[int]] = {}
    day_c: dict[str, frozenset[int]] = {}
    if {"tok_dob_month", "tok_dob_day", "tok_dob_year"} <= set(rec.columns):
        month_c, day_c = structure.decode_calendar(rec, dyears)
    found = {
        "tok_dob_year": {t: str(y) for t, y in dyears.items()},
        "tok_dob_month": structure.exact(month_c),
        "tok_dob_day": structure.exact(day_c),
    }
    decoded = {c: _by_value(rec[c], m) if c in rec else none for c, m in found.items()}
    for col, g in decoded.items():
        if col in rec:
            results.append(
                score(
                    "structure",
                    col,
                    "none",
                    rec[col].to_numpy(dtype=object),
                    g,
                    truth[col],
                    everyone,
                )
            )
    yguess = decoded["tok_dob_year"]
    for ov in overlaps:
        label = f"{round(ov * 100)}%"
        ref_ids = sample_reference(ctx.pop.index.to_numpy(), ov, seed)
        att = np.isin(ctx.person, ref_ids)
        step(f"frequency alignment, overlap {label}")
        freq: dict[str, np.ndarray] = {}
        for col in ctx.columns("tok_") + ctx.columns("blk_"):
            table = frequency.reference_table(ctx.ref(col, ref_ids))
            if table.empty:
                continue
            freq[col], result = _frequency(rec, col, label, table, truth[col], att)
            results.append(result)
        # Values of one name under several salts, joined through the records carrying them.
        for col, sets in chaining.chains(ctx.spec).items():
            if col not in rec:
                continue
            step(f"salt chaining on {col}, overlap {label}")
            for how, partners in sets.items():
                have = [p for p in partners if p in rec]
                results.append(salt_chaining(ctx, col, have, how, ref_ids, label, att))
        # A deterministic Bloom filter repeats per value like a token: align its counts too.
        for col in ctx.columns("bf_"):
            table = frequency.reference_table(ctx.ref(col, ref_ids))
            if table.empty:
                continue
            results.append(_frequency(rec, col, label, table, truth[col], att)[1])
        # Sex from the given names the alignment decoded (no frequency table for sex needed).
        given = _split_salted(freq.get("tok_given_name", pub.get("tok_given_name", none)))[0]
        sguess = none
        if "tok_sex" in rec:
            sguess = _by_value(rec["tok_sex"], structure.decode_sex(rec, given))
            results.append(
                score(
                    "structure",
                    "tok_sex",
                    label,
                    rec["tok_sex"].to_numpy(dtype=object),
                    sguess,
                    truth["tok_sex"],
                    att,
                )
            )
        best: dict[str, np.ndarray] = {}
        for how in ("pattern", "graph") if graph else ("pattern",):
            for col in ctx.columns("bf_"):
                step(f"{how} attack on {col}, overlap {label}")
                g = _bloom_guesses(ctx, col, ref_ids, how)
                results.append(
                    score(how, col, label, rec[col].to_numpy(dtype=object), g, truth[col], att)
                )
                best[f"{how}:{col}"] = g
        step(f"combined re-identification, overlap {label}")
        base = {"sex": sguess, "year": yguess, "district": freq.get("tok_postcode_district", none)}
        variants = {"frequency": (freq.get("tok_given_name"), freq.get("tok_family_name"))}
        if graph:
            variants["graph"] = (best.get("graph:bf_given_name"), best.get("graph:bf_family_name"))
        for name, (gv, fv) in variants.items():
            (gv, gy), (fv, fy) = _split_salted(gv), _split_salted(fv)
            year = yguess.copy()
            for y in (gy, fy):  # a decoded salted name carries its birth year
                if y is not None:
                    year = np.where(pd.isna(year), y, year)
            gs = {
                **base,
                "year": year,
                "given": gv if gv is not None else none,
                "family": fv if fv is not None else none,
            }
            r, p, n = combined(ctx, gs, ref_ids, month_c, day_c)
            results.append(
                AttackResult("combined", f"{name} names+dob+sex+district", label, r, p, n, n)
            )
    return results


def max_reidentification(results: list[AttackResult], overlap: str | None = None) -> float:
    rs = [r.records for r in results if overlap is None or r.overlap in (overlap, "none", "public")]
    return max(rs) if rs else 0.0
