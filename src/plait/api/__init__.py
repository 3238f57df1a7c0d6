"""App assembly, auth and the admin API."""
