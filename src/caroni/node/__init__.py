"""The service shell shared by managers and agents (see :mod:`caroni.node.runtime`)."""

from caroni.core import Incoming, Send
from caroni.node.role import Role
from caroni.node.runtime import Node
from caroni.node.tx import NoWork, Tx, UnitOfWork

__all__ = ["Incoming", "NoWork", "Node", "Role", "Send", "Tx", "UnitOfWork"]
