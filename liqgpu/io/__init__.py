"""Readers of exchange and vendor formats, and the archive fetcher."""
