"""The DICOM front door: the pynetdicom listener (C-ECHO, C-STORE, Storage Commitment).

It sits beside the REST layer (``api``): it receives instances, keeps them in the
instance store and hands them to the services layer, which makes the FHIR resources.
"""
