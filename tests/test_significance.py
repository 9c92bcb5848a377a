"""Paired comparison of two classifiers and the sign test, against hand computations."""

from __future__ import annotations

import pytest

from hf_compress.evaluation.compare import compare_predictions, sign_test


def test_counts_and_exact_mcnemar_by_hand():
    labels = [1, 0, 1, 1, 0, 1, 0, 2, 2]
    a = [1, 0, 1, 1, 0, 0, 1, 2, 1]  # right on 0-4 and 7
    b = [0, 1, 0, 0, 1, 0, 1, 2, 0]  # right on 7 only; wrong on 8 with a different class than a
    paired = compare_predictions(a, b, labels)
    assert (
        paired.both_correct,
        paired.a_only_correct,
        paired.b_only_correct,
        paired.both_wrong,
    ) == (1, 5, 0, 3)
    assert paired.same_prediction == 3  # examples 5, 6 and 7
    assert paired.accuracy_a == pytest.approx(6 / 9) and paired.accuracy_b == pytest.approx(1 / 9)
    assert paired.net_examples == 5
    # 5 discordant examples, all won by a: P = 2 * 0.5**5
    assert paired.mcnemar_p == pytest.approx(0.0625)
    # the reverse order is the mirror image, with the same p-value
    mirror = compare_predictions(b, a, labels)
    assert mirror.net_examples == -5 and mirror.mcnemar_p == pytest.approx(0.0625)


def test_mcnemar_uneven_split_by_hand():
    # 6 discordant examples split 5 to 1: P(X <= 1) + P(X >= 5) for X ~ Bin(6, 1/2)
    # = (1 + 6 + 6 + 1) / 64
    labels = [1] * 8
    a = [1, 1, 1, 1, 1, 0, 1, 0]
    b = [0, 0, 0, 0, 0, 1, 1, 0]
    paired = compare_predictions(a, b, labels)
    assert (paired.a_only_correct, paired.b_only_correct) == (5, 1)
    assert paired.mcnemar_p == pytest.approx(14 / 64)
    assert paired.to_dict()["mcnemar_p"] == pytest.approx(14 / 64) and paired.to_dict()[
        "agreement"
    ] == pytest.approx(2 / 8)


def test_no_disagreement_is_p_one_and_bad_lengths_are_refused():
    assert compare_predictions([0, 1], [0, 1], [1, 1]).mcnemar_p == 1.0
    with pytest.raises(ValueError, match="same, non-zero number"):
        compare_predictions([0, 1], [0], [0, 1])
    with pytest.raises(ValueError, match="same, non-zero number"):
        compare_predictions([], [], [])


def test_sign_test_by_hand():
    assert sign_test(7, 0) == pytest.approx(2 / 2**7)
    assert sign_test(0, 7) == pytest.approx(2 / 2**7)
    assert sign_test(6, 1) == pytest.approx(2 * 8 / 2**7)  # P(X >= 6) = (7 + 1) / 128, doubled
    assert sign_test(2, 2) == 1.0 and sign_test(0, 0) == 1.0
    with pytest.raises(ValueError, match="negative"):
        sign_test(-1, 3)
