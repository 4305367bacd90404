"""The method's pure logic: configuration sampling, seeds, answer combination, entropy, selection."""

import math

import numpy as np
import pytest

from semievol_lf.data.extraction import NO_ANSWER
from semievol_lf.semievol.pseudolabel.collaborate import agreed_answer, majority_answer, request_seed, sample_configs
from semievol_lf.semievol.pseudolabel.selection import mean_nll, percentile, select


def test_configs_are_distinct_seeded_and_cover_the_grid():
    a = sample_configs(["base", "warm"], [0, 1, 2, 3], 4, seed=1)
    assert a == sample_configs(["base", "warm"], [0, 1, 2, 3], 4, seed=1)
    assert len(set(a)) == 4
    draws = {tuple(sample_configs(["base", "warm"], [0, 1, 2, 3], 4, seed=s)) for s in range(20)}
    assert len(draws) > 10  # the seed matters
    assert len(sample_configs(["base", "warm"], [0, 1, 2, 3], 8, seed=0)) == 8
    with pytest.raises(ValueError):
        sample_configs(["base"], [0], 2, seed=0)


def test_paper_draw_is_todays_draw():
    """draw=paper is the draw the project always made: seed 42 gives three base configurations, one warm."""
    names = [c.name for c in sample_configs(["base", "warm"], [0, 1, 2, 3], 4, seed=42, draw="paper")]
    assert names == ["base-1shot", "base-0shot", "warm-1shot", "base-2shot"]


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("n", [2, 4, 6, 8])
def test_stratified_draw_mixes_models_and_spreads_shots(seed, n):
    configs = sample_configs(["base", "warm"], [0, 1, 2, 3], n, seed=seed, draw="stratified")
    assert len(set(configs)) == n and all(c.copy == 1 for c in configs)  # no repeats within the grid
    assert [c.model for c in configs].count("base") == n // 2  # base and warm n/2 times each
    per_shot = [[c.shots for c in configs].count(s) for s in range(4)]
    assert max(per_shot) - min(per_shot) <= 1  # n=4: 0, 1, 2, 3 once each
    assert configs == sample_configs(["base", "warm"], [0, 1, 2, 3], n, seed=seed, draw="stratified")


@pytest.mark.parametrize("draw", ["paper", "stratified"])
def test_repeated_configurations_get_their_own_names_and_seeds(draw):
    """w/o ICP: 4 collaborators from {base, warm} x {0 shots}: each configuration twice, named apart."""
    configs = sample_configs(["base", "warm"], [0], 4, seed=3, draw=draw, repeat=True)
    assert sorted(c.name for c in configs) == ["base-0shot", "base-0shot#2", "warm-0shot", "warm-0shot#2"]
    assert len({request_seed(42, "u1", c.name) for c in configs}) == 4
    assert len(sample_configs(["warm"], [0], 3, seed=0, draw=draw, repeat=True)) == 3
    with pytest.raises(ValueError, match="only 2 configurations"):
        sample_configs(["base", "warm"], [0], 4, seed=3, draw=draw)  # repetition only when asked for


def test_request_seed_depends_on_identity_only():
    assert request_seed(42, "u1", "warm-0shot") == request_seed(42, "u1", "warm-0shot")
    assert request_seed(42, "u1", "warm-0shot") != request_seed(42, "u2", "warm-0shot")
    assert request_seed(42, "u1", "warm-0shot") != request_seed(43, "u1", "warm-0shot")


def test_answer_combination():
    assert agreed_answer(["B", "B", "B"]) == "B"
    assert agreed_answer(["B", "A"]) is None
    assert agreed_answer([NO_ANSWER, NO_ANSWER]) is None
    assert majority_answer(["A", "C", "C", NO_ANSWER]) == "C"
    assert majority_answer(["C", "A", "A", "C"]) == "C"  # tie: first seen
    assert majority_answer([NO_ANSWER]) == NO_ANSWER


def test_entropy_is_mean_nll():
    assert mean_nll([-0.5, -1.5]) == 1.0
    assert mean_nll([]) == math.inf


@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_percentile_matches_numpy(q):
    values = list(np.random.default_rng(0).random(17))
    assert percentile(values, q) == pytest.approx(np.percentile(values, q * 100))


def test_selection_keeps_the_lower_half_ties_and_tiny_sets():
    tau, keep = select([0.1, 0.4, 0.2, 0.3], 0.5)
    assert tau == pytest.approx(0.25) and keep == [True, False, True, False]
    assert select([0.3, 0.3, 0.3], 0.5)[1] == [True] * 3  # ties at tau are kept
    assert select([0.7], 0.5) == (0.7, [True])
    assert select([0.1, 0.9], 1.0)[1] == [True, True]  # w/o AS keeps all
    assert select([], 0.5) == (None, [])
    assert select([math.inf, 0.2], 0.5)[1] == [False, True]  # no-evidence responses never pass
