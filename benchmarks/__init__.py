"""Benchmarks and the attack suite (benchmarks.attacks); scripts run by path."""
