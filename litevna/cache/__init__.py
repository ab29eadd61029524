"""Caches of finished response bodies (in-process now; Redis with the scale-out issue)."""
