"""Public testing helpers for integration tests of code that uses reqspec_repo.

Load the plugin with ``-p reqspec_repo.testing.pytest_plugin`` (or ``pytest_plugins =
["reqspec_repo.testing.pytest_plugin"]`` in a top-level conftest.py). It gives real
PostgreSQL servers (``pg_server``, ``pg_server_b``, ``killable_server``, ``disposable_server``) and migrated
throwaway topologies (``fresh_topology``, ``split_topology``); see README, "Testing your own
code". ``failpoints`` holds the crash hooks the move tests use.
"""
