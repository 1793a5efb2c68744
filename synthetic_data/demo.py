"""`make demo`: the whole pipeline THROUGH AIRFLOW on the embedded defaults.

synthetic population -> partnership keys -> every agency's bridge DAG (dag.test) -> the hub DAG
(dag.test) -> then, as the partnership would (`post_hub`):
  (a) the linkage evaluation (benchmarks/evaluate_linkage.py: plays every party, decrypting refs
      with each agency's own key, against ground truth and a plaintext baseline) writes
      hub/reports/linkage_quality.json;
  (b) a week of practitioner activity through the governance HTTP API (allocations, consent and
      gateway views, a denial, a break-glass, an identity request answered by an agency's
      re-identification service on a local port);
  (c) the IG lead's linkage audit report re-rendered with the quality figures and access section;
  (d) one subject access report, re-identified by the agency that received the request;
and prints where each output is. Airflow metadata is SQLite in <out>/airflow, the warehouse a
DuckDB file, the landing zone a folder (docs/contracts.md).

The Airflow environment must be set before Airflow is imported, so `main` configures it and
then re-runs itself in a child process with the environment in place. What follows the hub DAG
is synthetic_data.demo_post_hub; the simulated week, synthetic_data.demo_week.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.table import Table

from synthetic_data.demo_next import show_next_steps
from synthetic_data.demo_post_hub import console, post_hub, show_post_hub

REPO = Path(__file__).resolve().parents[1]


def airflow_env(out: Path) -> dict[str, str]:
    """Environment for an embedded Airflow rooted at <out>/airflow (SQLite metadata)."""
    home = out / "airflow"
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get(
                "AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"
            ),
            "JOINEDUP_RUN_DIR": str(out),
            "GX_ANALYTICS_ENABLED": "false",
            "NO_PROXY": "*",  # macOS: avoid proxy lookups forking in tasks
        }
    )
    return env


def migrate(env: dict[str, str]) -> None:
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).with_name("airflow")
    cmd = [str(airflow)] if airflow.exists() else [sys.executable, "-m", "airflow"]
    subprocess.run([*cmd, "db", "migrate"], env=env, check=True, capture_output=True)


def prepare(out: Path, people: int, seed: int, profile: str = "default") -> list[str]:
    """Population (skipped if already generated with the same size/seed/profile) and keys."""
    import json

    from linkage.orchestration import agency_dag_specs, provision
    from synthetic_data.generate import generate_population

    pop = out / "population"
    meta = pop / "population.json"
    current = json.loads(meta.read_text()) if meta.exists() else {}
    if (current.get("people"), current.get("seed"), current.get("profile", "default")) != (
        people,
        seed,
        profile,
    ):
        generate_population(pop, seed=seed, people=people, progress=True, profile=profile)
    codes = [s.code for s in agency_dag_specs()]
    provision(out, codes)
    return codes


def run_dags(codes: list[str]) -> dict[str, str]:
    """Runs inside the child process (environment already set). Returns dag_id -> state."""
    import warnings

    # dag.test runs Airflow's execution API in process through Starlette's test client, whose
    # note about its HTTP library is for Airflow's maintainers, not a demo user.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from airflow.dag_processing.dagbag import DagBag
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from linkage.orchestration import HUB_DAG_ID

    bag = DagBag(dag_folder=str(REPO / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    states: dict[str, str] = {}
    dag_ids = [f"bridge_{c.lower()}" for c in codes] + [HUB_DAG_ID]
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        job = bar.add_task("Airflow runs", total=len(dag_ids))
        for dag_id in dag_ids:
            bar.update(job, description=f"dag.test {dag_id}")
            dag = bag.get_dag(dag_id)
            dr = dag.test(run_conf={} if dag_id == HUB_DAG_ID else {"extract_kind": "snapshot"})
            states[dag_id] = str(getattr(dr.state, "value", dr.state))
            bar.advance(job)
    return states


def summarise(out: Path, states: dict[str, str], seconds: float) -> int:
    import duckdb

    from linkage.orchestration import hub_outputs

    runs = Table(title="Airflow runs")
    runs.add_column("DAG")
    runs.add_column("state")
    for dag_id, state in states.items():
        runs.add_row(dag_id, f"[green]{state}" if state == "success" else f"[red]{state}")
    console.print(runs)
    outputs = hub_outputs(out)
    wh = Path(outputs["warehouse"])
    if wh.exists():
        con = duckdb.connect(str(wh), read_only=True)
        try:
            counts = Table(title="Warehouse")
            counts.add_column("table")
            counts.add_column("rows", justify="right")
            for t in (
                "batch",
                "refused_batch",
                "record_person",
                "person",
                "household",
                "household_member",
                "family_edge",
                "clerical_review",
                "linkage_run",
            ):
                try:
                    n = con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
                except duckdb.Error:
                    n = "-"
                counts.add_row(t, str(n))
            console.print(counts)
        finally:
            con.close()
    for k, v in outputs.items():
        console.print(f"[bold]{k}[/]: {v}")
    console.print(f"Airflow metadata and logs: {out / 'airflow'}  ({seconds:.0f} s)")
    return 0 if all(s == "success" for s in states.values()) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("var/demo"))
    ap.add_argument("--people", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument(
        "--profile",
        choices=("default", "messy"),
        default="default",
        help="synthetic population profile (messy: real exports' errors, synthetic_data.messy)",
    )
    ap.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the plaintext Splink baseline (no privacy-cost figure)",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    out = args.out.resolve()
    if args.child:
        codes = os.environ["JOINEDUP_DEMO_CODES"].split(",")
        states = run_dags(codes)
        import json

        (out / "demo_states.json").write_text(json.dumps(states))
        return 0
    start = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    # A fresh governance store and agency re-identification logs per demo: the week is
    # simulated, so a re-run shows one week, not the sum of every earlier demo.
    (out / "hub" / "governance.db").unlink(missing_ok=True)
    for log in (out / "agency").glob("*/audit.log"):
        log.unlink()
    env = airflow_env(out)
    with console.status("Preparing Airflow metadata (SQLite)"):
        migrate(env)
    codes = prepare(out, args.people, args.seed, args.profile)
    env["JOINEDUP_DEMO_CODES"] = ",".join(codes)
    states_file = out / "demo_states.json"
    states_file.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "synthetic_data.demo", "--out", str(out), "--child"],
        env=env,
        check=False,
    )
    if proc.returncode != 0 or not states_file.exists():
        console.print(
            f"[red]Airflow runs failed (exit {proc.returncode}); logs under {out / 'airflow'}"
        )
        return 1
    import json

    rc = summarise(out, json.loads(states_file.read_text()), time.monotonic() - start)
    if rc != 0:
        return rc
    result = post_hub(out, baseline=not args.no_baseline)
    show_post_hub(result)
    console.print(f"demo finished in {time.monotonic() - start:.0f} s")
    show_next_steps(result["next"], console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
