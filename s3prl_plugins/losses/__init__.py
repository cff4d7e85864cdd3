"""Losses, one module per paper's family, each citing its equations."""
