"""FHIR helpers: models seam, bundles, outcomes, references, dates (pure)."""
