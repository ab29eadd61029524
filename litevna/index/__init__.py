"""Indexes: accounts, stores, keys and the study/series/instance query model."""


class Conflict(Exception):
    """A uniqueness rule refused the write (taken email, label, ...)."""
