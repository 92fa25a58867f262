"""Each node's own state: engine set-up, migrations, and the tables of both roles."""

from caroni.store.db import (
    create_db_engine,
    display_url,
    migrate,
    node_db,
    node_uuid,
    normalize_url,
    open_node_db,
    refused_as_config_error,
)
from caroni.store.tables import metadata

__all__ = [
    "create_db_engine",
    "display_url",
    "metadata",
    "migrate",
    "node_db",
    "node_uuid",
    "normalize_url",
    "open_node_db",
    "refused_as_config_error",
]
