"""The service shell shared by managers and agents (see :mod:`caroni.node.runtime`)."""

from caroni.node.runtime import Incoming, Node, Role, Send, Tx

__all__ = ["Incoming", "Node", "Role", "Send", "Tx"]
