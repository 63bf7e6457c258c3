"""A user's own method in one file, as the README shows (used by tests/test_extension.py)."""
