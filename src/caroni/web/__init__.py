"""The management sites: one per node, served by the node's own process.

A manager's site shows templates and workflows (live, with a DAG and the real
message sequence) and offers an HTTP API with OpenAPI; an agent's site shows its
jobs and job types. See docs/web.md.

The names below are loaded on first use: the ``caroni`` command imports this
package for ``caroni user``, and should not pay for FastAPI and uvicorn unless a
site is served.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caroni.web.auth import put_user
    from caroni.web.server import HttpAddress, SiteServer, parse_http

__all__ = ["HttpAddress", "SiteServer", "parse_http", "put_user"]

_WHERE = {
    "HttpAddress": "caroni.web.server",
    "SiteServer": "caroni.web.server",
    "parse_http": "caroni.web.server",
    "put_user": "caroni.web.auth",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'caroni.web' has no attribute {name!r}")
