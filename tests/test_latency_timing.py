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


class _Sleeper(nn.Module):
    """Takes `seconds` per forward, or a random time when `jitter` (a busy machine)."""

    def __init__(self, seconds: float, jitter: bool = False, seed: int = 0):
        super().__init__()
        self.seconds, self.jitter = seconds, jitter
        self.generator = __import__("random").Random(seed)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        import time

        time.sleep(self.seconds * (self.generator.uniform(0.2, 3.0) if self.jitter else 1.0))
        return input_ids.float()


def test_compare_latency_times_interleaved_and_takes_the_median_per_round_ratio(monkeypatch):
    import hf_compress.evaluation.measure as measure

    monkeypatch.setattr(measure, "machine_load", lambda: 0.1)
    timing = measure.compare_latency(
        {"base": _Sleeper(0.04), "small": _Sleeper(0.02)}, batch_sizes=(1, 4), runs=6
    )
    assert set(timing["latency_ms"]) == {"base", "small"} and set(timing["speedup"]) == {"small"}
    for batch in ("1", "4"):
        assert 1.5 < timing["speedup"]["small"][batch]["median"] < 2.5
        assert timing["latency_ms"]["small"][batch]["runs"] == 6
    assert timing["reliable"] and timing["reason"] is None


def test_a_busy_machine_makes_the_speed_figures_unreliable(monkeypatch):
    import hf_compress.evaluation.measure as measure

    monkeypatch.setattr(measure, "machine_load", lambda: 0.1)
    busy = measure.compare_latency(
        {"base": _Sleeper(0.003, True, seed=1), "small": _Sleeper(0.002, True, seed=2)}, runs=10
    )
    assert not busy["reliable"] and "spread" in busy["reason"]
    monkeypatch.setattr(measure, "machine_load", lambda: 2.5)
    loaded = measure.compare_latency({"base": _Sleeper(0.02), "small": _Sleeper(0.01)}, runs=4)
    assert not loaded["reliable"] and "load average was 2.50 per core" in loaded["reason"]


def test_unreliable_speed_figures_stay_out_of_the_card_and_are_flagged_in_the_table():
    from hub_server import SAMPLE_RECIPE, sample_report

    from hf_compress.evaluation.tables import comparison_table, speed_warning
    from hf_compress.hub.model_card import build_model_card

    report = sample_report(None)
    report["latency"] = {"reliable": False, "reason": "the load average was 3.00 per core"}
    card = str(build_model_card(report, SAMPLE_RECIPE))
    assert "Latency, batch" not in card and "Speed figures are left out" in card
    assert "(unreliable)" in comparison_table(report)
    assert "hf-compress bench <baseline> <output_dir>" in speed_warning(report)
    report["latency"] = {"reliable": True, "reason": None, "speedup": {"32": {"median": 2.5}}}
    assert "Latency, batch" in str(build_model_card(report, SAMPLE_RECIPE))
    assert speed_warning(report) is None
