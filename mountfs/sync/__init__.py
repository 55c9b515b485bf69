"""Sync: moving content and namespace changes between the local state and the backend."""
