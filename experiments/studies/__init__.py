"""The studies, one package each, built on experiments.core: stress tests, offline evaluation, the
calibration to real data, the validity report, sweeps, the comparison across seeds and benchmarks."""
