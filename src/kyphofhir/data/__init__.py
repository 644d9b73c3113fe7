"""Package data: R4 definitions (see docs/storage.md for provenance)."""
