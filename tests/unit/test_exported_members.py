"""The package's public surface."""

from __future__ import annotations

import kyphofhir


def test_all_is_sorted_and_complete() -> None:
    assert kyphofhir.__all__ == sorted(kyphofhir.__all__)
    assert all(hasattr(kyphofhir, name) for name in kyphofhir.__all__)
    assert kyphofhir.__version__
