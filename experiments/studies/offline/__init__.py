"""Offline evaluation against the simulator's truth: ranking metrics and off-policy estimates next to true returns."""
