"""bench.py sim: the VectorEnv's threads reach the env and the record, CPU time is reported next to
wall time, repeated windows give their median and range, and a bad thread or window count is one line
before any measurement."""

from __future__ import annotations

import pytest

from experiments.studies.benchmarks import sim


def test_a_record_names_its_threads_and_its_cpu_rate(monkeypatch):
    from envs import vector

    built = []

    class Spy(vector.RecVectorEnv):
        def __init__(self, *args, **kwargs):
            built.append(kwargs.get("threads"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(vector, "RecVectorEnv", Spy)
    records = [sim.measure("vector", "default", 8, 0.0, threads=t) for t in (2, 0)] + [
        sim.measure("raw", "default", 8, 0.0)
    ]
    assert built == [2, None]  # 0 on the command line: one per core
    assert [r["threads"] for r in records] == [2, 0, 1]
    assert all(r["cpu_user_steps_per_s"] > 0 and r["user_steps_per_s"] > 0 for r in records)
    assert "threads=2" in sim.format_records(records[:1]) and "per CPU-second" in sim.format_records(records)


def test_repeated_windows_report_their_median_and_range():
    record = sim.measure("vector", "default", 8, 0.0, repeats=3)
    rates = [w["user_steps_per_s"] for w in record["windows"]]
    assert len(rates) == 3 and all(w["steps"] >= 3 for w in record["windows"])
    assert record["user_steps_per_s"] == sorted(rates)[1]  # the median of three
    assert record["steps"] == sum(w["steps"] for w in record["windows"])
    assert f"windows {min(rates):,.0f}-{max(rates):,.0f}" in sim.format_records([record])
    single = sim.measure("vector", "default", 8, 0.0)
    assert len(single["windows"]) == 1 and "windows" not in sim.format_records([single])


@pytest.mark.parametrize("flag, bad, says", [("--repeats", "0", "give 1 to 100"), ("--repeats", "x", "give 1 to 100")])
def test_a_bad_window_count_is_one_line(flag, bad, says, capsys):
    with pytest.raises(SystemExit):
        sim.main([flag, bad])
    err = capsys.readouterr().err.strip().splitlines()
    assert flag in err[-1] and says in err[-1]


@pytest.mark.parametrize("bad", ["x", "-1", "9"])
def test_a_bad_thread_count_is_one_line(bad, capsys):
    with pytest.raises(SystemExit):
        sim.main(["--threads", bad])
    err = capsys.readouterr().err.strip().splitlines()
    assert "--threads" in err[-1] and "give 0 (one per core) to 8" in err[-1]
