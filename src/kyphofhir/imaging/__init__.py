"""DICOM → FHIR mapping (pure): ImagingStudy from instances, Observations from TID 1500 SR.

No network, no database: pydicom/highdicom data sets in, FHIR JSON out.
"""
