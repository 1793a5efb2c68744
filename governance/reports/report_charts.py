"""Charts of the linkage audit report: inline base64 PNGs (matplotlib), no external files."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

from governance.reports import appropriateness


def _weight(p: float | None) -> float | None:
    if p is None or not 0 < p < 1:
        return None
    return math.log2(p / (1 - p))


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _charts(data: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts: dict[str, str] = {}
    weights = [w for w in (_weight(s) for s in data["scores"]["record_scores"]) if w is not None]
    cl = [w for w in (_weight(s) for s in data["scores"]["clerical_scores"]) if w is not None]
    fig, ax = plt.subplots(figsize=(7, 3))
    if weights:
        ax.hist(weights, bins=40, alpha=0.7, label="records (best pair score)")
    if cl:
        ax.hist(cl, bins=40, alpha=0.7, label="clerical pairs")
    for name, p in data["thresholds"].items():
        w = _weight(p)
        if w is not None:
            ax.axvline(
                w,
                color="red" if "auto" in name else "orange",
                linestyle="--",
                label=f"{name} = {p}",
            )
    ax.set_xlabel("match weight (log2 odds)")
    ax.set_ylabel("count")
    ax.legend(fontsize=7)
    charts["scores"] = _png(fig)

    lv = [x for x in data["model"]["levels"] if x["weight"] is not None]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.22 * len(lv))))
    ax.barh(
        [f"{x['comparison']}: {str(x['level'])[:40]}" for x in lv],
        [x["weight"] for x in lv],
        color=["tab:green" if x["weight"] > 0 else "tab:red" for x in lv],
    )
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=6)
    ax.set_xlabel("match weight log2(m/u)")
    charts["model"] = _png(fig)

    charts["match_rates"] = _match_heatmap(data["match_rates"], data["threshold"], plt)

    sizes = data["clusters"]["sizes"]
    fig, ax = plt.subplots(figsize=(6, 2.8))
    t = data["threshold"]
    # a bar below the threshold would show a small count about people: drawn at 0, labelled
    ax.bar(
        [str(s["size"]) for s in sizes], [s["persons"] if s["persons"] >= t else 0 for s in sizes]
    )
    ax.set_xlabel("records per person")
    ax.set_ylabel(f"persons (bars under {t} not drawn)")
    ax.set_yscale("symlog")
    charts["clusters"] = _png(fig)
    charts.update(appropriateness.charts(data.get("appropriateness"), plt))
    return charts


def _match_heatmap(rates: list[dict[str, Any]], t: int, plt: Any) -> str:
    """Agency A (rows) by agency B (columns): the share of A's persons B also holds. A cell
    whose count is suppressed is grey and labelled <t, never coloured by its rate."""
    import numpy as np

    agencies = sorted({m["agency_a"] for m in rates} | {m["agency_b"] for m in rates})
    pos = {a: i for i, a in enumerate(agencies)}
    n = max(len(agencies), 1)
    grid = np.full((n, n), np.nan)
    text = [["" for _ in range(n)] for _ in range(n)]
    for m in rates:
        i, j = pos[m["agency_a"]], pos[m["agency_b"]]
        if m["rate"] is None:
            text[i][j] = m["n_both_shown"] if str(m["n_both_shown"]).startswith("<") else "-"
        else:
            grid[i, j] = 100 * m["rate"]
            text[i][j] = f"{100 * m['rate']:.0f}%"
    cmap = plt.get_cmap("Blues").copy()
    cmap.set_bad("#e6e6e6")
    fig, ax = plt.subplots(figsize=(1.6 + 0.75 * n, 1.0 + 0.6 * n))
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=100)
    for i in range(n):
        for j in range(n):
            dark = not np.isnan(grid[i, j]) and grid[i, j] > 60
            ax.text(
                j,
                i,
                text[i][j],
                ha="center",
                va="center",
                fontsize=7,
                color="white" if dark else "black",
            )
    ax.set_xticks(range(len(agencies)), agencies)
    ax.set_yticks(range(len(agencies)), agencies)
    ax.set_xlabel("also held by agency B")
    ax.set_ylabel("persons held by agency A")
    fig.colorbar(im, ax=ax, label="% of A's persons also at B", shrink=0.8)
    return _png(fig)
