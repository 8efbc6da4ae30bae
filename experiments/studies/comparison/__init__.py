"""The comparison of runs across seeds: tables, intervals, regret and per-day curves."""
