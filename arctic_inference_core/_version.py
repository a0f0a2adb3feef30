# Single source of the package version (read by the build too).
# Bump MINOR for additive public API changes, MAJOR for breaking ones; see
# docs/compatibility.md. tests/core/api/test_public_api.py holds the snapshot.
__version__ = "0.3.0"
