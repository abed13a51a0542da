"""Clients of the databases Sentinel reads and writes (shared by sources and write-backs)."""
