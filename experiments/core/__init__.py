"""The run library every study and entry point shares: run settings, the training loop, checkpoints and
stop signals, Ray fan-out, the one evaluation harness, the one logging path, statistics over seeds, and
the one markdown-table writer."""
