"""Authentication: signed API keys and tokens, and the guard that yields a Principal."""
