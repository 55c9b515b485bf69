"""Transport: everything that talks to the backend (typed API client, auth, block transfers)."""
