"""The storage boundary and its SQL backend."""
