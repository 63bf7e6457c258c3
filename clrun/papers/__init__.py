"""Published numbers clrun reproduces, one CSV per paper table (see ../shared/papers)."""
