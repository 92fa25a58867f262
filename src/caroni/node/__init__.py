"""The service shell shared by managers and agents (see :mod:`caroni.node.runtime`)."""

from caroni.core import Incoming, Send
from caroni.node.runtime import Node, Role, Tx

__all__ = ["Incoming", "Node", "Role", "Send", "Tx"]
