"""Evaluation: profiler (parameters, MACs, real-time factor)."""
