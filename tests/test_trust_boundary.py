"""The agency/hub trust boundary as code structure: the bridge installs and imports alone."""

from __future__ import annotations

import ast
import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
HUB_ONLY_MODULES = {
    "linkage",
    "governance",
    "dags",
    "duckdb",
    "splink",
    "airflow",
    "sqlalchemy",
    "fastapi",
}
HUB_ONLY_DISTS = {"apache-airflow", "apache-airflow-core", "splink", "duckdb"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_bridge_code_never_imports_hub_side() -> None:
    offenders = {}
    for path in sorted((ROOT / "ig_bridge").rglob("*.py")):
        bad = _imports(path) & HUB_ONLY_MODULES
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}, f"bridge modules import hub-side code: {offenders}"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirements: list[Requirement], extras: set[str]) -> set[str]:
    """Transitive distribution names required, evaluated against this interpreter."""
    seen: set[str] = set()
    todo = list(requirements)
    while todo:
        req = todo.pop()
        env_extras = extras if _norm(req.name) == "joinedup" else set()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (env_extras or {""})):
            continue
        name = _norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        for raw in dist.requires or []:
            sub = Requirement(raw)
            if (
                sub.marker is None
                or sub.marker.evaluate({"extra": ""})
                or any(sub.marker.evaluate({"extra": e}) for e in req.extras)
            ):
                todo.append(sub)
    return seen


def test_bridge_extra_pulls_no_hub_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for r in project["optional-dependencies"]["bridge"]]
    closure = _closure(reqs, set())
    assert closure, "could not resolve the bridge's dependencies from installed metadata"
    assert "cryptography" in closure and "great-expectations" in closure
    assert not closure & HUB_ONLY_DISTS, sorted(closure & HUB_ONLY_DISTS)


def test_bridge_imports_work_in_a_python_c_program() -> None:
    """pyspark (dev/spark extras) makes GX import pyspark.sql.connect, which exits a `python -c`
    program silently unless its connect extras are installed: the bridge must still run."""
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-W",
            "ignore",
            "-c",
            "import great_expectations, ig_bridge.split; print('bridge imports ok')",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0 and "bridge imports ok" in proc.stdout, proc.stderr[-2000:]
