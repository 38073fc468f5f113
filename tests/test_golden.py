"""Every preset and two full combinations compute the update values recorded before the
losses moved to pure functions (tests/golden_updates.py), to float32 tolerance."""
import json
import math

import numpy as np
import pytest

from tests import golden_updates

with open(golden_updates.GOLDEN_PATH) as _file:
    GOLDEN = json.load(_file)
# Recorded as 0.0 on updates that skipped the actor step; now reported as NaN with the
# 0/1 metric `actor_updated`, and left out of every mean (issue 11's metrics fix).
ACTOR_STEP_METRICS = {"actor_loss", "alpha_loss", "entropy"}


@pytest.mark.slow(8)
@pytest.mark.parametrize("case", sorted(golden_updates.CASES))
def test_update_values_match_the_recorded_golden_values(case):
    got = golden_updates.compute(*golden_updates.CASES[case])
    want = GOLDEN[case]
    for index, (got_metrics, want_metrics) in enumerate(zip(got["metrics"], want["metrics"])):
        assert set(got_metrics) - {"actor_updated"} == set(want_metrics), index
        skipped = got_metrics.get("actor_updated", 1.0) == 0.0
        for name, value in want_metrics.items():
            if skipped and name in ACTOR_STEP_METRICS:
                assert math.isnan(got_metrics[name]) and value == 0.0, (index, name)
                continue
            np.testing.assert_allclose(got_metrics[name], value, rtol=2e-5, atol=1e-6,
                                       err_msg=f"update {index}: {name}")
    assert set(got["state"]) == set(want["state"])
    for group, (total, total_abs) in want["state"].items():
        got_total, got_abs = got["state"][group]
        np.testing.assert_allclose(got_abs, total_abs, rtol=2e-5, err_msg=group)
        assert abs(got_total - total) <= 2e-5 * max(total_abs, 1.0), group
