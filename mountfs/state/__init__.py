"""The client's local state in SQLite: schema, connection, tree mirror, extents, outbox."""
