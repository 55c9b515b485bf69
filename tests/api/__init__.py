"""Black-box tests of the backend's HTTP API against a real server process."""
