"""hf_compress.evaluation.measure's timing helpers: the summary of per-run times, and round-robin
timing (every model run once per round, so machine load hits them alike)."""

import torch
from torch import nn

from hf_compress.evaluation.measure import latency_summary, round_robin_latency


def test_latency_summary_is_median_and_nearest_rank_percentiles():
    times = [float(t) for t in (10, 1, 9, 2, 8, 3, 7, 4, 6, 5)]
    assert latency_summary(times) == {"median": 5.5, "p10": 2.0, "p90": 10.0, "runs": 10}
    assert latency_summary([4.0]) == {"median": 4.0, "p10": 4.0, "p90": 4.0, "runs": 1}


class _Recorder(nn.Module):
    def __init__(self, name: str, calls: list[tuple[str, bool]]):
        super().__init__()
        self.name, self.calls = name, calls

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.name, torch.is_inference_mode_enabled()))
        return input_ids.float().sum()


def test_round_robin_interleaves_the_models_run_by_run_in_inference_mode():
    calls: list[tuple[str, bool]] = []
    models = {name: _Recorder(name, calls) for name in ("a", "b", "c")}
    times = round_robin_latency(models, {"input_ids": torch.ones(2, 3)}, runs=3, warmup=1)
    assert [name for name, _ in calls] == [
        "a",
        "b",
        "c",
    ] * 4  # one warm-up round, then 3 timed rounds
    assert all(inference for _, inference in calls)
    assert set(times) == {"a", "b", "c"}
    for wall, cpu in times.values():
        assert len(wall) == len(cpu) == 3 and all(t >= 0 for t in wall + cpu)
