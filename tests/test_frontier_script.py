"""benchmarks/frontier_with_peers.py: points are taken against the teacher of their own run, and a
peer counts as dominated only when one of our points is at least as good on every axis."""

import json

from tiny import load_script


def _script():
    return load_script("frontier_with_peers")


def _entry(name, acc, size, bs1, bs32):
    lat = {"1": {"median": bs1}, "32": {"median": bs32}}
    return {"name": name, "metrics": {"accuracy": acc}, "size_bytes": size, "latency_ms": lat}


def test_dominance_against_peers(tmp_path):
    bench = {
        "metric_name": "accuracy",
        "results": [
            _entry("teacher (fp32)", 0.86, 1000, 20.0, 500.0),
            _entry("ours-fast", 0.86, 500, 5.0, 100.0),  # +0 pt, 2x smaller, 5x faster
            _entry("ours-small", 0.80, 100, 20.0, 500.0),
        ],
    }
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(bench))
    teacher = {
        "metrics": {"accuracy": 0.5},
        "size_bytes": 400,
        "latency_ms": {"1": {"median": 10.0}, "32": {"median": 100.0}},
    }
    peer = {
        "peer": "torch-pruning",
        "torch_pruning_version": "1.6.1",
        "teacher_dir": str(tmp_path),
        "teacher": teacher,
        # relative to its own teacher: +0 pt, 2x smaller, 2x faster -> dominated by ours-fast
        "pruned": {
            "metrics": {"accuracy": 0.5},
            "latency_ms": {"1": {"median": 5.0}, "32": {"median": 50.0}},
        },
        "saved": {"safetensors_bytes": 200},
    }
    ov_base = {
        "accuracy": 0.9,
        "size_bytes": 1000,
        "latency_ms": {"1": {"median": 10.0}, "32": {"median": 100.0}},
    }
    ov = {
        "peer": "optimum-intel / OpenVINO",
        "results": {
            "pytorch_fp32": ov_base,
            # 10x faster: nothing of ours is that fast -> not dominated
            "openvino_int8_static": {
                "accuracy": 0.9,
                "size_bytes": 250,
                "latency_ms": {"1": {"median": 1.0}, "32": {"median": 10.0}},
            },
        },
    }
    (tmp_path / "tp.json").write_text(json.dumps(peer))
    (tmp_path / "ov.json").write_text(json.dumps(ov))
    script = _script()
    ours = script.points_from_benchmark(tmp_path / "run" / "results.json")
    peers = script.points_from_peer(tmp_path / "tp.json") + script.points_from_peer(
        tmp_path / "ov.json"
    )
    assert [p.name for p in ours] == ["ours-fast", "ours-small"]
    assert ours[0].size_ratio == 2.0 and ours[0].speedup_bs32 == 5.0
    verdict = {peer.name: (by.name if by else None) for peer, by in script.dominance(ours, peers)}
    assert verdict == {"torch-pruning 1.6.1 heads+FFN": "ours-fast", "OpenVINO int8_static": None}
    script.main(
        [
            "--results",
            str(tmp_path / "run" / "results.json"),
            "--peers",
            str(tmp_path / "tp.json"),
            str(tmp_path / "ov.json"),
            "--out",
            str(tmp_path / "fr"),
        ]
    )
    assert "**not dominated**" in (tmp_path / "fr.md").read_text()
    assert (tmp_path / "fr.png").stat().st_size > 1000


def test_bench_files_add_points_against_their_first_row(tmp_path):
    def row(model, acc, size, bs32):
        return {
            "model": model,
            "metrics": {"accuracy": acc},
            "size_bytes": size,
            "latency_ms": {"1": {"median": bs32 / 20}, "32": {"median": bs32}},
        }

    bench = {
        "results": [
            row("out/teacher", 0.90, 1000, 400.0),
            row("out/pruned-onnx-int8", 0.91, 200, 50.0),
            {**row("out/teacher", 0.90, 1000, 200.0), "dtype": "bfloat16"},
        ]
    }
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    ov = {
        "results": {
            "pytorch_fp32": {
                "accuracy": 0.9,
                "size_bytes": 1000,
                "latency_ms": {"1": {"median": 10.0}, "32": {"median": 100.0}},
            },
            "openvino_int8_static": {
                "accuracy": 0.9,
                "size_bytes": 250,
                "latency_ms": {"1": {"median": 2.0}, "32": {"median": 20.0}},
            },
        }
    }
    (tmp_path / "ov.json").write_text(json.dumps(ov))
    script = _script()
    point, bf16 = script.points_from_bench(tmp_path / "bench.json", "accuracy")
    assert (
        point.name == "pruned-onnx-int8" and point.size_ratio == 5.0 and point.speedup_bs32 == 8.0
    )
    assert round(point.delta_pt, 6) == 1.0
    assert (
        bf16.name == "teacher (bfloat16)"
        and bf16.speedup_bs32 == 2.0
        and bf16.source == f"{tmp_path.name}/bench.json"
    )
    script.main(
        [
            "--bench",
            str(tmp_path / "bench.json"),
            "--peers",
            str(tmp_path / "ov.json"),
            "--out",
            str(tmp_path / "fr"),
        ]
    )
    # 8x >= 5x faster, 5x >= 4x smaller, +1 >= 0 points: the OpenVINO point is dominated
    assert f"pruned-onnx-int8 ({tmp_path.name}/bench.json)" in (tmp_path / "fr.md").read_text()
    two_runs = {
        "results": [
            row("t", 0.9, 1000, 400.0),
            row("run-a/pruned", 0.9, 500, 200.0),
            row("run-b/pruned", 0.9, 500, 200.0),
        ]
    }
    (tmp_path / "two.json").write_text(json.dumps(two_runs))
    assert [p.name for p in script.points_from_bench(tmp_path / "two.json", "accuracy")] == [
        "run-a/pruned",
        "run-b/pruned",
    ]


def test_openvino_on_our_export_counts_as_ours(tmp_path):
    lat = {"1": {"median": 1.0}, "32": {"median": 10.0}}
    base = {
        "accuracy": 0.9,
        "size_bytes": 1000,
        "latency_ms": {"1": {"median": 10.0}, "32": {"median": 100.0}},
    }
    ours = {
        "ours": True,
        "results": {
            "pytorch_fp32": base,
            "x": {
                "name": "pruned + OpenVINO",
                "accuracy": 0.9,
                "size_bytes": 200,
                "latency_ms": lat,
            },
        },
    }
    (tmp_path / "ours.json").write_text(json.dumps(ours))
    (point,) = _script().points_from_peer(tmp_path / "ours.json")
    assert point.name == "pruned + OpenVINO" and not point.peer and point.speedup_bs32 == 10.0


def test_peer_rows_of_a_bench_file_are_peers_and_failed_peers_are_skipped(tmp_path):
    """benchmarks/peer_torch_int8.py writes the bench layout with `peer: true` rows and error
    rows."""

    def row(model, acc, size, bs32, **extra):
        return {
            "model": model,
            "metrics": {"accuracy": acc},
            "size_bytes": size,
            "latency_ms": {"1": {"median": bs32 / 20}, "32": {"median": bs32}},
            **extra,
        }

    bench = {
        "results": [
            row("teacher", 0.90, 1000, 400.0),
            row("torch quantize_dynamic int8", 0.89, 400, 100.0, peer=True),
            {
                "model": "torchao int8 + torch.compile",
                "peer": True,
                "error": "RuntimeError: no compiler",
            },
            row("out/ours-int8", 0.90, 600, 120.0),
        ]
    }
    (tmp_path / "peers.json").write_text(json.dumps(bench))
    script = _script()
    peer, ours = script.points_from_bench(tmp_path / "peers.json", "accuracy")
    assert peer.peer and peer.name == "torch quantize_dynamic int8" and peer.speedup_bs32 == 4.0
    assert not ours.peer and ours.name == "ours-int8"
    script.main(["--bench", str(tmp_path / "peers.json"), "--out", str(tmp_path / "fr")])
    table = (tmp_path / "fr.md").read_text()
    # ours is smaller-is-worse (1.67x < 2.5x), so the peer is not dominated: the check can fail
    assert "| torch quantize_dynamic int8 | **not dominated** |" in table
    assert "torch.compile" not in table
