"""RowValidator: GX's verdict per distinct status combination, mapped back to rows, equals a
plain row-by-row reading of the statuses; combinations already judged in the batch are not
sent to GX again."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd

from ig_bridge.validate import OK, RowValidator

COLS = [f"subject.f{i}" for i in range(12)]
REASONS = ["bad check digit", "unparseable date", "missing"]


def _chunk(rng: random.Random, n: int) -> pd.DataFrame:
    d = {c: np.full(n, OK, dtype=object) for c in COLS}
    for _ in range(n // 20):
        d[rng.choice(COLS)][rng.randrange(n)] = rng.choice(REASONS)
    return pd.DataFrame(d).astype("category")


def _reference(st: pd.DataFrame) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for i, row in enumerate(st.astype(object).itertuples(index=False)):
        for c, v in zip(COLS, row, strict=True):
            if v != OK:
                out.setdefault(i, []).append(f"{c}: {v}")
    return out


def test_reasons_equal_row_by_row_and_known_combinations_skip_gx() -> None:
    rng = random.Random(3)
    v = RowValidator(COLS, None)
    runs: list[int] = []
    real = v.vd

    class Spy:  # counts GX runs and the rows GX is given
        def run(self, **kw):  # type: ignore[no-untyped-def]  # noqa: ANN202
            runs.append(len(kw["batch_parameters"]["dataframe"]))
            return real.run(**kw)

    v.vd = Spy()  # type: ignore[assignment]
    first = _chunk(rng, 3000)
    assert v.check(first).reasons == _reference(first)
    assert runs and runs[0] < 3000  # distinct combinations only
    # the same statuses again (shuffled): every combination is known, GX is not re-run
    again = first.sample(frac=1.0, random_state=1).reset_index(drop=True)
    n_runs = len(runs)
    assert v.check(again).reasons == _reference(again)
    assert len(runs) == n_runs
    # a new combination is judged by GX; an all-ok chunk has no reasons
    fresh = _chunk(rng, 500)
    fresh.loc[0, COLS[0]] = REASONS[0]
    fresh.loc[0, COLS[1]] = REASONS[1]
    assert v.check(fresh).reasons == _reference(fresh)
    ok = pd.DataFrame({c: np.full(50, OK, dtype=object) for c in COLS}).astype("category")
    assert v.check(ok).reasons == {}
