"""The kyphoplasty study in FHIR: codes, profiles, ODI scoring, import, demo cohort.

Pure mapping code: it builds and checks FHIR JSON and never touches the store or HTTP
(the services layer calls it).
"""
