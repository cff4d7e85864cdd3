"""Segmentations: TextGrid I/O (MFA's format), CTC forced alignment, frame-level labels."""
