"""Cost of scrubbing free text and open categories at the bridge, on realistic extracts.

    .venv/bin/python benchmarks/bench_scrub.py --people 5000

Generates a synthetic population and runs the real bridge on the agencies whose extracts carry
free text (CSC case notes, POL incident notes, EH notes) `--repeat` times, timing the payload
scrub step inside each run (the machine is shared, so the step's own time is the figure, not a
difference of two noisy wall times). Prints the bridge wall time, the scrub's time and share,
and its cost per scrubbed text. Also prints the free-text corpus figure
(tests/data/scrub_corpus.yaml): forms caught by the shipped scrubber.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

import ig_bridge.split as split  # noqa: E402
from ig_bridge.scrub import Scrubber, record_values  # noqa: E402
from synthetic_data.generate import generate_population  # noqa: E402
from synthetic_data.parties import provision_partnership  # noqa: E402

AGENCIES = ("CSC", "POL", "EH")


def _bridge(run: Path, codes: dict[str, Path]) -> tuple[float, float, int]:
    """(bridge wall time, time inside the payload scrub step, rows read)."""
    real = split._scrub_payload
    spent = [0.0]

    def timed(*a: object, **k: object) -> None:
        t = time.perf_counter()
        real(*a, **k)
        spent[0] += time.perf_counter() - t

    split._scrub_payload = timed  # type: ignore[assignment]
    try:
        shutil.rmtree(run / "landing", ignore_errors=True)
        rows = 0
        t0 = time.perf_counter()
        for code, extract in codes.items():
            res = split.run_bridge(
                extract,
                ROOT / "schemas" / "agencies" / f"{code.lower()}.yaml",
                run / "agency" / code,
                run / "landing",
            )
            rows += res.rows_read
        return time.perf_counter() - t0, spent[0], rows
    finally:
        split._scrub_payload = real  # type: ignore[assignment]


def corpus_figure() -> tuple[int, int]:
    corpus = yaml.safe_load((ROOT / "tests" / "data" / "scrub_corpus.yaml").read_text("utf-8"))
    caught = 0
    for case in corpus["cases"]:
        s = Scrubber()
        s.learn_names(corpus["other_rows_names"])
        out = s.scrub(case["text"], record_values(corpus["record"]))
        low, squashed = out.lower(), re.sub(r"[\s.\-/()]", "", out).lower()
        caught += not any(
            str(g).lower() in low or (re.fullmatch(r"\d{4,}", str(g)) and str(g) in squashed)
            for g in case["gone"]
        )
    return caught, len(corpus["cases"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        summary = generate_population(run / "population", seed=7, people=args.people)
        provision_partnership(run, list(AGENCIES))
        codes = {c: run / "population" / summary.agencies[c].file for c in AGENCIES}
        _bridge(run, codes)  # warm-up: imports, Presidio registry, GX
        runs = [_bridge(run, codes) for _ in range(args.repeat)]
        texts = 0
        import pyarrow.parquet as pq

        for p in (run / "landing").rglob("payload.parquet"):
            t = pq.read_table(p)
            for f in ("case_notes", "incident_notes"):
                if f in t.column_names:
                    texts += t.column(f).drop_null().length()
    caught, total = corpus_figure()
    wall, scrub, rows = min(runs, key=lambda r: r[1])
    print(f"rows bridged (CSC+POL+EH): {rows:,}; texts scrubbed: {texts:,}")
    print(
        f"bridge wall: {', '.join(f'{r[0]:.2f}' for r in runs)} s; scrub step: "
        f"{', '.join(f'{r[1]:.2f}' for r in runs)} s"
    )
    print(
        f"scrub share of bridge time: {scrub / wall:.0%}; "
        f"{scrub / max(texts, 1) * 1000:.2f} ms per text (best run)"
    )
    print(f"free-text corpus: {caught}/{total} forms caught")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
