"""LiteVNA: a self-hosted DICOMweb image store."""

__version__ = "0.1.0"
