"""The IG report's appropriateness section: the whole decision log read against the
partnership's model of appropriate information sharing.

Eight interactions: for information an agency holds, it offers / shares when asked / does not
offer / withholds when asked; for information another agency holds, a worker requests /
accepts what is offered / does not request / refuses what is offered. Every audit entry that
carries `interactions` is counted: the decisions of the protocol rules (governance.decisions)
and the records of what the rules never see (governance.sharing).

Who is counted: an interaction on the recipient side (request, accept, not requested, offer
refused) belongs to the worker's agency and team; one on the holder side belongs to the holding
agency, and to the recording worker's team when a worker decided it (an offer, a decision not to
offer, an off-system share), or to "(protocol rules)" when the rules decided it.

Each agency and team falls in one of four quadrants by two flags:
- over-open: shares made outside the ordinary rules (under a break-glass override, or outside
  the system) are at least SIGNAL_RATE of its shares, and at least MIN_SIGNAL of them;
- over-cautious: a refusal of its was overturned on challenge by the IG lead or the Caldicott
  guardian (a finding, not a signal), or its discretionary withholding (not offering, not
  requesting, refusing offers) is at least SIGNAL_RATE of its withholding, at least MIN_SIGNAL;
neither: ideal; both: chaotic. The counts are of staff decisions, not of people: no
suppression applies, and no subject id appears.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Interaction(StrEnum):
    """governance.decisions.Interaction's values, here without importing the decision engine
    (and the bridge's recogniser it loads) into the report; a test keeps the two equal."""

    OFFER = "offer"
    REQUEST = "request"
    DISCLOSE_ON_REQUEST = "disclose_on_request"
    ACCEPT = "accept"
    WITHHOLD_OFFER = "withhold_offer"
    WITHHOLD_REQUEST = "withhold_request"
    REFUSE_REQUEST = "refuse_request"
    DECLINE_OFFER = "decline_offer"


SIGNAL_RATE = 0.25
MIN_SIGNAL = 2
RULES = "(protocol rules)"
UNKNOWN = "(not known)"
ORDER = (
    Interaction.OFFER,
    Interaction.DISCLOSE_ON_REQUEST,
    Interaction.WITHHOLD_OFFER,
    Interaction.REFUSE_REQUEST,
    Interaction.REQUEST,
    Interaction.ACCEPT,
    Interaction.WITHHOLD_REQUEST,
    Interaction.DECLINE_OFFER,
)
LABELS = {
    Interaction.OFFER: "I offer",
    Interaction.DISCLOSE_ON_REQUEST: "I share when asked",
    Interaction.WITHHOLD_OFFER: "I do not offer",
    Interaction.REFUSE_REQUEST: "I withhold when asked",
    Interaction.REQUEST: "I request",
    Interaction.ACCEPT: "I accept what is offered",
    Interaction.WITHHOLD_REQUEST: "I do not request",
    Interaction.DECLINE_OFFER: "I refuse what is offered",
}
SHARING = frozenset(
    {Interaction.OFFER, Interaction.DISCLOSE_ON_REQUEST, Interaction.REQUEST, Interaction.ACCEPT}
)
RECIPIENT = frozenset(
    {
        Interaction.REQUEST,
        Interaction.ACCEPT,
        Interaction.WITHHOLD_REQUEST,
        Interaction.DECLINE_OFFER,
    }
)
QUADRANTS = ("ideal", "over-open", "over-cautious", "chaotic")
_DISCRETIONARY = {
    "sharing_not_offered": "did_not_offer",
    "sharing_not_requested": "did_not_request",
    "withheld_request": "did_not_request",
}


@dataclass
class Group:
    counts: Counter[str] = field(default_factory=Counter)
    overturned_kinds: Counter[str] = field(default_factory=Counter)
    signals: Counter[str] = field(default_factory=Counter)  # break_glass_shares, ...

    def row(self) -> dict[str, Any]:
        shares = sum(self.counts[k] for k in SHARING)
        withholds = sum(self.counts[k] for k in ORDER if k not in SHARING)
        s = self.signals
        outside = s["break_glass_shares"] + s["off_system_shares"]
        discretionary = s["did_not_offer"] + s["did_not_request"] + s["offers_refused"]
        open_rate = outside / shares if shares else 0.0
        cautious_rate = discretionary / withholds if withholds else 0.0
        is_open = outside >= MIN_SIGNAL and open_rate >= SIGNAL_RATE
        is_cautious = s["overturned"] > 0 or (
            discretionary >= MIN_SIGNAL and cautious_rate >= SIGNAL_RATE
        )
        quadrant = QUADRANTS[int(is_open) + 2 * int(is_cautious)]
        why = []
        if s["break_glass_shares"]:
            why.append(f"{s['break_glass_shares']} of {shares} shares under break-glass")
        if s["off_system_shares"]:
            why.append(f"{s['off_system_shares']} of {shares} shares outside the system")
        if s["overturned"]:
            why.append(f"{s['overturned']} refusal(s) overturned on challenge")
        for key, text in (
            ("did_not_offer", "not offered"),
            ("did_not_request", "not requested"),
            ("offers_refused", "offers refused"),
        ):
            if s[key]:
                why.append(f"{s[key]} {text}")
        return {
            "counts": {k.value: self.counts[k] for k in ORDER},
            "overturned_by_kind": {k.value: self.overturned_kinds[k] for k in ORDER},
            "shares": shares,
            "withholds": withholds,
            "open_rate": open_rate,
            "cautious_rate": cautious_rate,
            "quadrant": quadrant,
            "signals": why,
            **{
                k: s[k]
                for k in (
                    "break_glass_shares",
                    "off_system_shares",
                    "did_not_offer",
                    "did_not_request",
                    "offers_refused",
                    "overturned",
                    "upheld",
                )
            },
        }


class Appropriateness:
    """Tallies audit bodies as they stream past (`observe`), then `section()`."""

    def __init__(self, staff: Mapping[str, tuple[str | None, str | None]] | None = None) -> None:
        self.staff = dict(staff or {})
        self.agencies: dict[str, Group] = defaultdict(Group)
        self.teams: dict[tuple[str, str], Group] = defaultdict(Group)
        self.challenged: dict[str, list[dict[str, Any]]] = {}
        self.challenges = Counter[str]()
        self.channels = Counter[str]()
        self.refused_records = 0

    def observe(self, entries: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for body in entries:
            self.add(body)
            yield body

    # -- one entry ------------------------------------------------------------------------

    def _home(self, body: Mapping[str, Any]) -> tuple[str, str]:
        agency, team = self.staff.get(str(body.get("user_id")), (None, None))
        agency = body.get("agency") or agency
        team = body["team"] if body.get("team") else team
        return agency or UNKNOWN, team or UNKNOWN

    def _groups(self, agency: str, team: str) -> tuple[Group, Group]:
        return self.agencies[agency], self.teams[(agency, team)]

    def _count(self, body: Mapping[str, Any], ix: Mapping[str, Any], by_rules: bool) -> None:
        try:
            kind = Interaction(ix.get("kind"))
        except ValueError:
            return
        home_agency, home_team = self._home(body)
        if kind in RECIPIENT:
            agency, team = (ix.get("agency") or home_agency), home_team
            if ix.get("agency") and ix.get("agency") != home_agency:
                team = UNKNOWN  # the other side of an off-system share
        else:
            agency = ix.get("agency") or home_agency
            team = RULES if by_rules else (home_team if agency == home_agency else UNKNOWN)
        for g in self._groups(agency, team):
            g.counts[kind] += 1

    def _signal(self, agency: str, team: str, key: str, n: int = 1) -> None:
        for g in self._groups(agency, team):
            g.signals[key] += n

    def add(self, body: Mapping[str, Any]) -> None:
        t = body.get("type")
        if t == "household_decision":  # one request, whatever the number of members
            subs = list(body.get("decisions") or [])
            seen = {
                (i.get("kind"), i.get("agency")): i
                for d in subs
                for i in d.get("interactions") or []
            }
            used = any((d.get("break_glass") or {}).get("used") for d in subs)
            self.add(
                {
                    "type": "decision",
                    "user_id": body.get("user_id"),
                    "interactions": list(seen.values()),
                    "break_glass": {"used": used},
                }
            )
            return
        if t == "sharing_record_refused":
            self.refused_records += 1
            return
        by_rules = t in ("decision", "withheld_request")
        for ix in body.get("interactions") or []:
            self._count(body, ix, by_rules)
        agency, team = self._home(body)
        bg = body.get("break_glass") or {}
        if t == "decision" and bg.get("used"):
            self._signal(agency, team, "break_glass_shares")
        if t in _DISCRETIONARY:
            self._signal(agency, team, _DISCRETIONARY[t])
        elif t == "sharing_offer_response" and not body.get("accepted"):
            self._signal(agency, team, "offers_refused")
        elif t == "sharing_off_system":
            self.channels[str(body.get("channel"))] += 1
            for side in (body.get("from_agency"), body.get("to_agency")):
                self._signal(side, team if side == agency else UNKNOWN, "off_system_shares")
        elif t == "sharing_challenge":
            self.challenges["raised"] += 1
            self.challenged[str(body.get("record_id"))] = list(body.get("challenged") or [])
        elif t == "sharing_challenge_decision":
            outcome = str(body.get("outcome"))
            self.challenges[outcome] += 1
            for w in self.challenged.get(str(body.get("challenge_id")), []):
                who = RULES if w.get("side") == "rules" else (w.get("team") or UNKNOWN)
                self._signal(w.get("agency") or UNKNOWN, who, outcome)
                if outcome == "overturned":
                    for g in self._groups(w.get("agency") or UNKNOWN, who):
                        g.overturned_kinds[Interaction(w["kind"])] += 1

    # -- the section ----------------------------------------------------------------------

    def section(self) -> dict[str, Any]:
        agencies = [{"agency": a, **g.row()} for a, g in sorted(self.agencies.items())]
        teams = [{"agency": a, "team": t, **g.row()} for (a, t), g in sorted(self.teams.items())]
        decided = self.challenges["upheld"] + self.challenges["overturned"]
        return {
            "interactions": [
                {"kind": k.value, "label": LABELS[k], "shares": k in SHARING} for k in ORDER
            ],
            "by_agency": agencies,
            "by_team": teams,
            "quadrants": {q: sum(r["quadrant"] == q for r in agencies) for q in QUADRANTS},
            "challenges": {
                "raised": self.challenges["raised"],
                "open": self.challenges["raised"] - decided,
                "upheld": self.challenges["upheld"],
                "overturned": self.challenges["overturned"],
            },
            "off_system_by_channel": dict(sorted(self.channels.items())),
            "refused_records": self.refused_records,
            "signal_rate": SIGNAL_RATE,
            "min_signal": MIN_SIGNAL,
        }


def tally(
    entries: Iterable[Mapping[str, Any]] | None,
    staff: Mapping[str, tuple[str | None, str | None]] | None = None,
) -> tuple[Appropriateness | None, Iterable[Mapping[str, Any]] | None]:
    """(tally, entries to read on): the report reads the audit log once, for both sections."""
    if entries is None:
        return None, None
    t = Appropriateness(staff)
    return t, t.observe(entries)


# --------------------------------------------------------------------------- chart


def charts(section: Mapping[str, Any] | None, plt: Any) -> dict[str, str]:
    """Left: each agency's interactions, sharing (blues) and withholding (oranges). Right:
    each agency placed by its over-open and over-cautious rates, on the four quadrants."""
    if not section or not section["by_agency"]:
        return {}
    from governance.reports.report_charts import _png

    rows = section["by_agency"]
    names = [r["agency"] for r in rows]
    kinds = section["interactions"]
    blues, oranges = plt.get_cmap("Blues"), plt.get_cmap("Oranges")
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(11, max(3.0, 0.45 * len(rows) + 1.5)), gridspec_kw={"width_ratios": [3, 2]}
    )
    start = [0] * len(rows)
    ns = nw = 0
    for k in kinds:
        if k["shares"]:
            colour, ns = blues(0.35 + 0.18 * ns), ns + 1
        else:
            colour, nw = oranges(0.35 + 0.18 * nw), nw + 1
        vals = [r["counts"][k["kind"]] for r in rows]
        left.barh(names, vals, left=start, color=colour, label=k["label"])
        start = [a + b for a, b in zip(start, vals, strict=True)]
    left.invert_yaxis()
    left.set_xlabel("interactions recorded")
    left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=4)
    rate = section["signal_rate"]
    colours = {
        "ideal": "tab:green",
        "over-open": "tab:red",
        "over-cautious": "tab:orange",
        "chaotic": "tab:purple",
    }
    for r in rows:
        right.scatter(r["cautious_rate"], r["open_rate"], color=colours[r["quadrant"]], s=40)
        right.annotate(
            r["agency"],
            (r["cautious_rate"], r["open_rate"]),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    right.axvline(rate, color="grey", linestyle="--", linewidth=0.8)
    right.axhline(rate, color="grey", linestyle="--", linewidth=0.8)
    for x, y, text in (
        (0.02, 0.02, "ideal"),
        (0.02, 0.95, "over-open"),
        (0.98, 0.02, "over-cautious"),
        (0.98, 0.95, "chaotic"),
    ):
        right.text(
            x,
            y,
            text,
            transform=right.transAxes,
            fontsize=8,
            color="grey",
            ha="left" if x < 0.5 else "right",
            va="bottom" if y < 0.5 else "top",
        )
    right.set_xlim(-0.02, 1.02)
    right.set_ylim(-0.02, 1.02)
    right.set_xlabel("discretionary withholding / withholding")
    right.set_ylabel("shares outside the rules / shares")
    return {"appropriateness": _png(fig)}
