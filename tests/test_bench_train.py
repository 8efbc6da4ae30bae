"""experiments/bench.py train: the training benchmark's records, at smoke sizes."""

from __future__ import annotations

import json
import math

from experiments.studies.benchmarks.train import TrainingClock

KEYS = {
    "agent",
    "device",
    "env_steps_per_s",
    "sample_s",
    "learn_s",
    "final_return",
    "target",
    "time_to_target_s",
    "flops_per_env_step",
    "peak_memory_mb",
}


def test_train_benchmark_prints_one_json_record_per_agent(cli, capsys):
    argv = ["train", "--json", "--smoke", "--agent", "both", "--device", "cpu", "--target", "0"]
    assert cli("bench", argv) is not None
    records = json.loads(capsys.readouterr().out)  # stdout holds the records only
    assert [r["agent"] for r in records] == ["ppo", "sb3-ppo"]
    for r in records:
        assert set(r) >= KEYS and r["device"] == "cpu"
        assert r["env_steps"] >= 512 and r["env_steps_per_s"] > 0
        assert r["sample_s"] > 0 and r["learn_s"] > 0 and math.isfinite(r["final_return"])
        assert r["time_to_target_s"] is not None and r["time_to_target_s"] <= r["train_wall_s"]  # target 0: reached
        assert r["flops_per_env_step"] > 0 and r["peak_memory_mb"] > 0
    assert records[0]["pretrain_s"] > 0 and records[1]["pretrain_s"] == 0  # sb3-ppo warm-starts only when asked


def test_a_target_never_reached_is_said_so_not_timed():
    clock = TrainingClock(target=60.0)
    clock.on_start("run", 0)
    clock.on_iteration(2048, dict(sample_s=1.0, learn_s=2.0, iteration_s=3.0, pretrain_s=float("nan")))
    clock.on_evaluation(2048, dict(return_mean=59.9), seconds=0.5)
    assert clock.time_to_target_s is None and clock.trained_steps == 2048
    clock.on_evaluation(4096, dict(return_mean=60.0), seconds=0.5)
    assert clock.time_to_target_s is not None and clock.steps_to_target == 4096


def test_an_algo_section_with_both_agents_is_one_clear_error(cli, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("algo: {lr: 0.001}\n")
    assert cli("bench", ["train", "--config", str(cfg), "--agent", "both"]) is None
    err = capsys.readouterr().err
    assert err.startswith("error:") and "give --agent" in err and len(err.strip().splitlines()) == 1


def test_flops_count_the_cpus_fused_attention_forward_and_backward():
    """Treatment against control: torch's own counter sees no arithmetic in the CPU's flash attention
    kernel; the benchmark's counter gives it torch's attention formula, forward and backward."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    from experiments.studies.benchmarks.train import flop_counter

    q, k, v = (torch.randn(2, 4, n, 16, requires_grad=True) for n in (8, 24, 24))
    keep = torch.rand(2, 1, 8, 24) > 0.3
    keep[..., 0] = True

    def attend_and_backward(counter: FlopCounterMode) -> int:
        with counter:
            F.scaled_dot_product_attention(q, k, v, attn_mask=keep).sum().backward()
        return counter.get_total_flops()

    shapes = (2, 4, 8, 16), (2, 4, 24, 16), (2, 4, 24, 16)
    expected = sdpa_flop_count(*shapes) + sdpa_backward_flop_count((2, 4, 8, 16), *shapes)
    assert attend_and_backward(FlopCounterMode(display=False)) == 0
    assert attend_and_backward(flop_counter()) == expected > 0
