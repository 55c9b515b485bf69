"""Unit tests: one layer at a time, no servers, no mounts."""
