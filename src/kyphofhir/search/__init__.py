"""Search parameters, extraction and query parsing (pure: no IO beyond package data)."""
