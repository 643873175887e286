"""Internal: see reqspec_repo/__init__.py for the public API."""
