"""yr.datasystem.object_client: where openYuanrong keeps WriteMode; re-exported
for code that imports it from here."""

from yr.datasystem.kv_client import WriteMode  # noqa: F401

__all__ = ["WriteMode"]
