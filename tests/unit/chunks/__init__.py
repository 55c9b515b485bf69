"""Tests of the chunk pipeline (`mountfs.chunks`) and the shared types it produces."""
