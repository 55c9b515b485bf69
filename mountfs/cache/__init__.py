"""File content on local disk: sparse cache files, space accounting, eviction, keyed locks."""
