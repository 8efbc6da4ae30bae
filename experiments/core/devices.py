"""Where a learner trains: the devices a run may name and how "auto" resolves."""

from __future__ import annotations

import sys

DEVICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(device: str, quiet: bool = False) -> str:
    """'cpu' or 'cuda'. An explicit cuda without a GPU is an error, never a quiet fall back to CPU;
    'auto' says which it picked when it picks the CPU (unless `quiet`: a check ahead of the run)."""
    if device not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not cuda_available():
        raise ValueError("--device cuda was given but no CUDA GPU is visible to torch")
    if device == "auto":
        if cuda_available():
            return "cuda"
        if not quiet:
            print("device auto: no CUDA GPU visible, training on the CPU", file=sys.stderr)
        return "cpu"
    return device
