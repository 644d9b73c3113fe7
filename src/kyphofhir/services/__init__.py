"""Interactions over the store: CRUD, search, history, transactions."""
