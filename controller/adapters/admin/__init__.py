"""The admin HTTP API server (routes, auth, validation of path parameters)."""
