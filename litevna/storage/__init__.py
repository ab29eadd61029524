"""Blob stores: where instance files live."""
