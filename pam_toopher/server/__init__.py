"""A Toopher-compatible API server with a phone simulator, for tests and demos.

See docs/server.md.  ``Store`` holds the state (SQLite), ``Api`` answers the
Toopher v1 endpoints, ``Phone`` plays the Toopher app on the same database.
"""
