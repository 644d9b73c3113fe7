"""DIMSE status codes the listener answers with (PS3.4 Annex B and J, PS3.7 Annex C).

The ``A7xx`` family means "out of resources, try again later": a sender keeps the
instance and retries. The ``Cxxx`` family ("cannot understand") means this data set will
never be accepted as sent; retrying it unchanged is pointless.
"""

from __future__ import annotations

from enum import IntEnum


class StoreStatus(IntEnum):
    """C-STORE response statuses."""

    SUCCESS = 0x0000
    """Stored durably and indexed as FHIR."""
    OUT_OF_RESOURCES = 0xA700
    """Refused: out of resources. Disk full, a write error, or the database unavailable;
    nothing was kept, the sender should retry later."""
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    """The data set's SOP Class UID differs from the presentation context's abstract
    syntax or the command's Affected SOP Class UID."""
    CANNOT_DECODE = 0xC210
    """Cannot understand: the data set cannot be parsed in the negotiated transfer syntax
    (truncated, garbage after the file meta, an element longer than the data set)."""
    PROCESSING_FAILURE = 0xC211
    """Cannot understand: an unexpected error while storing or indexing (logged with its
    traceback); nothing was kept."""
    MISSING_IDENTIFIERS = 0xC212
    """Cannot understand: Study, Series or SOP Instance UID (or SOP Class UID) missing,
    not a valid UID, or the SOP Instance UID differs from the command's Affected SOP
    Instance UID."""
    CANNOT_INDEX = 0xC213
    """Cannot understand: the instance was readable but the FHIR mapping refused it (for
    example a patient module that cannot make a valid Patient); nothing was kept."""


class ActionStatus(IntEnum):
    """N-ACTION response statuses (Storage Commitment request)."""

    SUCCESS = 0x0000
    NO_SUCH_ACTION = 0x0123
    """Action Type ID other than 1 (Request Storage Commitment)."""
    MISSING_ATTRIBUTE = 0x0120
    """Transaction UID or Referenced SOP Sequence absent."""
    INVALID_ARGUMENT_VALUE = 0x0115
    """A Referenced SOP Sequence item without class or instance UID."""
    PROCESSING_FAILURE = 0x0110


class CommitmentFailure(IntEnum):
    """Failure Reason (0008,1197) values in a Storage Commitment event report."""

    PROCESSING_FAILURE = 0x0110
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    """Not in the store, or on disk but not (or not yet) indexed as FHIR."""
    CLASS_INSTANCE_CONFLICT = 0x0119
    """Stored under a different SOP Class UID than the request names."""
