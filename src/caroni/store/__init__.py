"""Each node's own state: engine set-up, migrations, and the tables of both roles."""

from caroni.store.db import create_db_engine, migrate, node_uuid, normalize_url
from caroni.store.tables import metadata

__all__ = ["create_db_engine", "metadata", "migrate", "node_uuid", "normalize_url"]
