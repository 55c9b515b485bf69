"""Shared test support: free ports, a real backend process, a small typed API client."""
