"""Data: audio loading and validation (corpora, data dirs and datasets come with the recipes)."""
