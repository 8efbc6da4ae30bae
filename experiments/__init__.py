"""Entry points, the evaluation harness, logging, reports and benchmarks."""
