"""Evaluation metrics on small hand-computed cases."""

from __future__ import annotations

import pandas as pd
import pytest

from linkage.evaluation import (
    bcubed_metrics,
    household_pairwise_metrics,
    pair_completeness,
    pairwise_metrics,
    true_pairs,
    tune_auto_threshold,
)

# Predicted {a,b,c} {d}; truth {a,b} {c,d}; agencies a=X b=Y c=X d=Y.
PRED = pd.DataFrame(
    {"record_ref": list("abcd"), "cluster_id": [1, 1, 1, 2], "agency": list("XYXY")}
)
TRUTH = pd.DataFrame({"record_ref": list("abcd"), "person_id": ["t1", "t1", "t2", "t2"]})


def test_pairwise_all_pairs() -> None:
    s = pairwise_metrics(PRED, TRUTH)
    # predicted pairs ab ac bc; true pairs ab cd; only ab in both
    assert (s.tp, s.fp, s.fn) == (1, 2, 1)
    assert s.precision == pytest.approx(1 / 3)
    assert s.recall == pytest.approx(1 / 2)
    assert s.f1 == pytest.approx(0.4)


def test_pairwise_cross_agency_only() -> None:
    s = pairwise_metrics(PRED, TRUTH, cross_agency_only=True)
    # cross-agency predicted: ab, bc; cross-agency true: ab, cd
    assert (s.tp, s.fp, s.fn) == (1, 1, 1)
    assert s.precision == pytest.approx(0.5)
    assert s.recall == pytest.approx(0.5)


def test_bcubed() -> None:
    s = bcubed_metrics(PRED, TRUTH)
    assert s.precision == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1) / 4)
    assert s.recall == pytest.approx((1 + 1 + 0.5 + 0.5) / 4)


def test_perfect_and_singletons() -> None:
    perfect = TRUTH.rename(columns={"person_id": "cluster_id"})
    assert pairwise_metrics(perfect, TRUTH).f1 == 1.0
    assert bcubed_metrics(perfect, TRUTH).f1 == 1.0
    singletons = TRUTH.assign(cluster_id=range(4))[["record_ref", "cluster_id"]]
    s = pairwise_metrics(singletons, TRUTH)
    assert (s.precision, s.recall, s.f1) == (1.0, 0.0, 0.0)


def test_household_pairwise() -> None:
    pred = pd.DataFrame({"record_ref": list("abc"), "household_id": ["h", "h", "h"]})
    truth = pd.DataFrame({"record_ref": list("abc"), "true_household_id": ["x", "x", "y"]})
    s = household_pairwise_metrics(pred, truth)
    assert s.precision == pytest.approx(1 / 3)
    assert s.recall == 1.0


def test_records_must_match() -> None:
    with pytest.raises(ValueError, match="do not cover the same records"):
        pairwise_metrics(PRED.iloc[:3], TRUTH)


def test_pair_completeness_ignores_order() -> None:
    truth_pairs = true_pairs(TRUTH, key="record_ref")
    assert sorted(map(tuple, truth_pairs.to_numpy())) == [("a", "b"), ("c", "d")]
    cand = pd.DataFrame({"l": ["b", "a", "b"], "r": ["a", "c", "a"]})
    tp = truth_pairs.rename(columns={"record_ref_l": "l", "record_ref_r": "r"})
    assert pair_completeness(cand, tp, left="l", right="r") == 0.5


def test_tune_threshold_stops_before_false_matches() -> None:
    truth = pd.DataFrame({"unique_id": list("abcdef"), "person_id": [1, 1, 2, 2, 3, 4]})
    scored = pd.DataFrame(
        {
            "unique_id_l": ["a", "c", "e", "a"],
            "unique_id_r": ["b", "d", "f", "c"],
            "match_probability": [0.9999, 0.999, 0.99, 0.9],
        }
    )
    assert tune_auto_threshold(scored, truth, min_precision=0.999) == 0.999
    # at 2/3 precision the false pair at 0.99 is tolerated
    assert tune_auto_threshold(scored, truth, min_precision=0.6) == 0.99
