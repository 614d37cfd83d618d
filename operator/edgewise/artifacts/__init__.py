"""Content-addressed artifact stores: built-in (a volume + read-only HTTP) and OCI registries (ORAS)."""
