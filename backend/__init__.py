"""mountfs backend: the metadata service and the embedded block store."""
