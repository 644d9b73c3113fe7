"""SQLAlchemy backend: schema, engine, queries, migrations."""
