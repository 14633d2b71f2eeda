"""benchmarks/paired_statistics.py: the t-interval, the paired t-test, the verdicts, runs matched by concept and seed."""

from __future__ import annotations

import math

import pytest

from conftest import benchmark_module

S = benchmark_module("paired_statistics")


def test_mean_ci_is_the_t_interval_with_n_minus_one_dof():
    mean, half = S.mean_ci([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert half == pytest.approx(3.182446305 * 1.290994449 / 2)  # t(0.975, 3) * sd / sqrt(4)
    assert S.mean_ci([0.7])[0] == 0.7 and math.isnan(S.mean_ci([0.7])[1])
    assert all(math.isnan(x) for x in S.mean_ci([]))
    assert S.mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.0)


def test_paired_test_is_the_two_sided_paired_t_test():
    test = S.paired_test([0.5, 0.6, 0.9, 0.7], [0.4, 0.65, 0.5, 0.5])  # differences 0.1, -0.05, 0.4, 0.2
    assert test["n"] == 4 and test["difference"] == pytest.approx(0.1625)
    assert test["p"] == pytest.approx(0.183568, abs=1e-6)  # t = 1.7219, 3 dof
    assert test["ci95"] == pytest.approx(3.182446305 * 0.188745861 / 2)
    assert S.paired_test([1, 2, 3, 4, 5], [0, 1.1, 2.2, 2.9, 4.1])["p"] == pytest.approx(5.0947e-5, rel=1e-3)
    assert S.paired_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])["p"] == 1.0  # no difference anywhere
    assert S.paired_test([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])["p"] == 0.0  # the same difference in every run
    assert math.isnan(S.paired_test([1.0], [0.0])["p"])
    with pytest.raises(ValueError):
        S.paired_test([1.0, 2.0], [1.0])


def test_verdicts_need_significance_in_a_direction():
    assert S.verdict(0.1, 0.01) == "agrees"
    assert S.verdict(-0.1, 0.01) == "disagrees"
    assert S.verdict(0.3, 0.06) == "cannot tell"
    assert S.verdict(0.3, math.nan) == "cannot tell"


def row(method, concept, seed, **figures):
    return {"concept": concept, "seed": seed, "method": method, "recognition": 0.5, "train_seconds": 1.0, **figures}


def test_paired_values_match_runs_by_concept_and_seed():
    rows = [row("yochameleon", "bo", 0, recognition=0.9), row("yochameleon", "bo", 1, recognition=0.8),
            row("yochameleon", "mam", 0, recognition=0.7), row("shared-tokens", "mam", 0, recognition=0.2),
            row("shared-tokens", "bo", 0, recognition=0.1), row("shared-tokens", "pip", 0, recognition=0.3)]
    assert S.paired_values(rows, "yochameleon", "shared-tokens", "recognition") == ([0.9, 0.7], [0.1, 0.2])
    rows.append(row("baseline-plain", "bo", 0, train_seconds=None))
    assert S.paired_values(rows, "yochameleon", "baseline-plain", "train_seconds") == ([], [])
