"""Small-number suppression: primary and secondary rules, totals, and the disclosure check."""

from __future__ import annotations

import itertools
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linkage.disclosure import (
    DisclosureError,
    check_marts,
    main,
    suppress,
    totals,
    write_aggregate,
)


def _grid(values: list[int], n_rows: int, dims: tuple[str, str] = ("a", "b")) -> pd.DataFrame:
    n_cols = len(values) // n_rows
    keys = list(itertools.product(range(n_rows), range(n_cols)))
    return pd.DataFrame(
        {
            dims[0]: [f"r{r}" for r, _ in keys],
            dims[1]: [f"c{c}" for _, c in keys],
            "n": values[: len(keys)],
        }
    )


def _assert_safe(raw: pd.DataFrame, out: pd.DataFrame, dims: list[str], t: int) -> None:
    pub = out["n"]
    # 1. no published cell in 1..t-1
    assert not ((pub.notna()) & (pub > 0) & (pub < t)).any()
    # every primary-rule cell is suppressed
    assert out.loc[(raw["n"] > 0) & (raw["n"] < t), "suppressed"].all()
    # 2. for any group whose true total is known, true total minus the published cells is the sum
    # of >= 2 suppressed cells (or 0): it never isolates one suppressed cell.
    for d in dims:
        others = [c for c in dims if c != d] or None
        keyed = out.assign(_true=raw["n"].to_numpy(), _g=0)
        for _, grp in keyed.groupby(others or "_g"):
            if len(grp) < 2:
                continue
            diff = grp["_true"].sum() - grp["n"].fillna(0).sum()
            n_supp = int(grp["suppressed"].sum())
            assert n_supp != 1, f"lone suppressed cell in group over {d}"
            if n_supp == 0:
                assert diff == 0
    # 3. published totals minus their published cells reveal nothing
    tot = totals(out, dims)
    for d in dims:
        others = [c for c in dims if c != d]
        sub = tot[tot["total_over"] == d]
        for _, trow in sub.iterrows():
            mask = pd.Series(True, index=out.index)
            for c in others:
                mask &= out[c] == trow[c]
            if trow["suppressed"]:  # withheld: nothing of its group is published
                assert int(out.loc[mask, "n"].fillna(0).sum()) == 0
                assert out.loc[mask, "suppressed"].any()
                continue
            diff = int(trow["n"]) - int(out.loc[mask, "n"].fillna(0).sum())
            assert diff == 0
            assert int(trow["n"]) == 0 or int(trow["n"]) >= t


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(1, 5), cols=st.integers(1, 5), t=st.integers(2, 12), data=st.data())
def test_property_no_cell_or_difference_reveals_a_small_count(
    rows: int, cols: int, t: int, data: st.DataObject
) -> None:
    values = data.draw(st.lists(st.integers(0, 40), min_size=rows * cols, max_size=rows * cols))
    raw = _grid(values, rows)
    out = suppress(raw, ["a", "b"], threshold=t)
    _assert_safe(raw, out, ["a", "b"], t)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.integers(0, 30), min_size=1, max_size=12), t=st.integers(2, 12))
def test_property_one_dimension(values: list[int], t: int) -> None:
    raw = pd.DataFrame({"a": [f"x{i}" for i in range(len(values))], "n": values})
    out = suppress(raw, ["a"], threshold=t)
    _assert_safe(raw, out, ["a"], t)


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.integers(0, 25), min_size=8, max_size=8))
def test_property_three_dimensions(values: list[int]) -> None:
    keys = list(itertools.product("xy", "pq", "uv"))
    raw = pd.DataFrame(
        {
            "a": [k[0] for k in keys],
            "b": [k[1] for k in keys],
            "c": [k[2] for k in keys],
            "n": values,
        }
    )
    out = suppress(raw, ["a", "b", "c"], threshold=10)
    _assert_safe(raw, out, ["a", "b", "c"], 10)


def test_lone_suppressed_cell_forces_next_smallest() -> None:
    raw = pd.DataFrame({"a": ["x", "y", "z"], "n": [3, 12, 40]})
    out = suppress(raw, ["a"], threshold=10)
    assert out["suppressed"].tolist() == [True, True, False]
    assert out["n"].isna().tolist() == [True, True, False]
    assert int(out["n"].iloc[2]) == 40


def test_zero_is_published_and_nonzero_preferred_for_secondary() -> None:
    raw = pd.DataFrame({"a": ["w", "x", "y", "z"], "n": [0, 4, 15, 30]})
    out = suppress(raw, ["a"], threshold=10)
    assert out["suppressed"].tolist() == [False, True, True, False]
    assert int(out["n"].iloc[0]) == 0


def test_bad_count_names_table_row_and_field() -> None:
    raw = pd.DataFrame({"a": ["x", "y"], "n": [3, -1]})
    with pytest.raises(DisclosureError, match=r"tbl: row 2: field n"):
        suppress(raw, ["a"], table="tbl")


def _marts(tmp_path: Path) -> Path:
    path = tmp_path / "m.duckdb"
    con = duckdb.connect(str(path))
    raw = _grid([3, 25, 14, 40, 2, 11, 0, 19, 30], 3)
    write_aggregate(con, "agg_demo", raw, ["a", "b"], 10, "r1", "demo")
    con.close()
    return path


def test_check_passes_on_written_marts_and_cli_exit_zero(tmp_path: Path) -> None:
    path = _marts(tmp_path)
    assert check_marts(path) == []
    assert main(["check", str(path)]) == 0


def test_check_flags_small_cell_lone_suppression_and_bad_totals(tmp_path: Path) -> None:
    path = _marts(tmp_path)
    con = duckdb.connect(str(path))
    # undo one suppression: publishes a small cell and leaves a lone suppressed cell
    con.execute("UPDATE agg_demo SET n = 3, suppressed = false WHERE a = 'r0' AND b = 'c0'")
    con.execute("UPDATE agg_demo_totals SET n = n + 1 WHERE total_over = 'a' AND b = 'c1'")
    con.execute("CREATE TABLE sneaky (record_ref VARCHAR)")
    con.close()
    rules = {v.rule for v in check_marts(path)}
    assert {
        "small_cell",
        "lone_suppressed_cell",
        "total_not_from_published",
        "uncatalogued",
    } <= rules
    assert main(["check", str(path)]) == 1
    assert main(["check", str(tmp_path / "absent.duckdb")]) == 2


def test_total_of_an_all_suppressed_group_is_withheld_not_zero(tmp_path: Path) -> None:
    """Ages 16-17 with 36 people spread thinly over every cell: the total is not a false 0."""
    raw = pd.DataFrame(
        {
            "age": ["16-17"] * 6 + ["5-10"] * 2,
            "flag": ["a", "b", "c", "d", "e", "f", "g", "h"],
            "n": [6, 6, 6, 6, 6, 6, 40, 50],
        }
    )
    cells = suppress(raw, ["age", "flag"], 10)
    tot = totals(cells, ["age", "flag"])
    row = tot[(tot["total_over"] == "flag") & (tot["age"] == "16-17")].iloc[0]
    assert pd.isna(row["n"]) and bool(row["suppressed"]) and row["n_suppressed_cells"] == 6
    published = tot[(tot["total_over"] == "flag") & (tot["age"] == "5-10")].iloc[0]
    assert published["n"] == 90 and not published["suppressed"]

    path = tmp_path / "marts.duckdb"
    con = duckdb.connect(str(path))
    write_aggregate(con, "agg_age", raw, ["age", "flag"], 10, "run-1", "demo")
    con.close()
    assert check_marts(path) == []
    # The old behaviour, a 0 where every cell was withheld, is caught as a breach.
    con = duckdb.connect(str(path))
    con.execute(
        "UPDATE agg_age_totals SET n = 0, suppressed = false "
        "WHERE total_over = 'flag' AND age = '16-17'"
    )
    con.close()
    assert "false_zero" in {v.rule for v in check_marts(path)}
