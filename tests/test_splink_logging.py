"""Splink's per-level "unable to train m value" warnings are summarised in one line by a real
training run on toy pseudonymised data; other Splink warnings still get through."""

from __future__ import annotations

import contextlib
import logging
import re

import duckdb
import pytest
from test_linkage_toydata import make_toy

from linkage import person_linkage as pl
from linkage.splink_logging import EM_LOGGER, summarise_untrained_m

RAW = "unable to train m value"


def _train(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    toy = make_toy(n_households=40, seed=7)  # small: several levels see no training pair
    con = duckdb.connect()
    con.register("_ids", toy.identifiers)
    con.execute("CREATE TABLE identifiers AS SELECT * FROM _ids")
    cols = pl.prepare_input(con)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        pl.train_model(con, cols, pl.LinkageSettings(show_progress=False), "v")
    con.close()
    return list(caplog.records)


def _raw_levels(records: list[logging.LogRecord]) -> set[str]:
    out = set()
    for r in records:
        m = re.search(r"Level (.+) on comparison (\S+) not observed", r.getMessage())
        if m:
            out.add(f"{m.group(2)}: {m.group(1)}")
    return out


def test_training_logs_one_summary_instead_of_per_level_warnings(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _train(caplog)
    assert not [r for r in records if RAW in r.getMessage()]
    summary = [r for r in records if r.getMessage().startswith("m not trained for")]
    assert len(summary) == 1 and summary[0].name == "linkage.person_linkage"
    msg = summary[0].getMessage()
    n = int(re.search(r"for (\d+) comparison level", msg).group(1))
    named = set(msg.split(": ", 1)[1].split(" (kept at")[0].split("; "))
    assert n == len(named) > 0

    # The same training without the summary: Splink's own warnings, one line per level, name
    # every level the summary names (and the summary drops none that stayed untrained).
    monkeypatch.setattr(pl, "summarise_untrained_m", lambda *_a, **_k: contextlib.nullcontext())
    raw = [r for r in _train(caplog) if RAW in r.getMessage()]
    assert len(raw) > 1 and named <= _raw_levels(raw)
    assert f"{len(raw)} Splink warnings summarised" in msg


def test_filter_is_scoped_to_training_and_to_that_warning(caplog: pytest.LogCaptureFixture) -> None:
    em = logging.getLogger(EM_LOGGER)

    class _NoLevels:
        class _settings_obj:  # noqa: N801 - the attribute Splink's linker has
            comparisons: list = []

    with caplog.at_level(logging.INFO):
        with summarise_untrained_m(_NoLevels(), logging.getLogger("t")):
            em.warning("Level x on comparison y not observed in dataset, %s", RAW)
            em.warning("EM did not converge")  # any other Splink warning passes
        em.warning("Level x on comparison y not observed in dataset, %s", RAW)  # after: passes
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == [
        "EM did not converge",
        f"Level x on comparison y not observed in dataset, {RAW}",
    ]
    assert not em.filters


def test_bridge_validation_import_prints_no_pyspark_warning() -> None:
    """GX imports pyspark when it is installed; the bridge never uses Spark, so pyspark's
    pandas-version FutureWarning is not shown there (a fresh interpreter, all warnings on)."""
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-W", "always", "-c", "import ig_bridge.validate"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "PySpark" not in res.stderr and "pyspark" not in res.stderr
    # while pyspark itself still warns where it is imported directly (nothing hidden globally)
    res = subprocess.run(
        [
            sys.executable,
            "-W",
            "always",
            "-c",
            "import ig_bridge.validate, importlib, sys;"
            "[sys.modules.pop(m) for m in list(sys.modules) if 'pyspark' in m];"
            "import pyspark.sql.connect.utils",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "PySpark does not yet fully support pandas" in res.stderr


def test_plaintext_baseline_summarises_too(caplog: pytest.LogCaptureFixture) -> None:
    """The evaluation's plaintext Splink (make demo's last step) logs the same one line, not
    Splink's warning per untrained level."""
    import pandas as pd

    from linkage.evaluation import plaintext_baseline

    toy = make_toy(n_households=40, seed=7)
    p = toy.plaintext
    plain = p.assign(
        unique_id=p["agency"] + ":" + p["record_ref"],
        date_of_birth=pd.to_datetime(p["date_of_birth"]),
    )[["unique_id", "given_name", "family_name", "date_of_birth", "sex", "postcode", "nhs_number"]]
    con = duckdb.connect()
    con.register("_plain", plain)
    con.execute("CREATE TABLE plain AS SELECT * FROM _plain")
    with caplog.at_level(logging.INFO):
        plaintext_baseline(con, "plain")
    con.close()
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if RAW in m]
    summary = [r for r in caplog.records if r.getMessage().startswith("m not trained for")]
    assert len(summary) == 1 and summary[0].name == "linkage.plaintext_baseline"
