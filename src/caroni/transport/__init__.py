"""Message transports: one interface (:mod:`caroni.transport.base`), two backends.

- :class:`MemoryTransport` on a shared in-process :class:`MemoryBroker`: the embedded
  default and the test double; no broker, no latency.
- :class:`AmqpTransport` configured by :class:`AmqpSettings`: RabbitMQ, with publisher
  confirms and automatic reconnection.
"""

from caroni.transport.amqp import AmqpSettings, AmqpTransport
from caroni.transport.base import Consumer, Delivery, OutgoingMessage, Transport
from caroni.transport.memory import MemoryBroker, MemoryTransport

__all__ = [
    "AmqpSettings",
    "AmqpTransport",
    "Consumer",
    "Delivery",
    "MemoryBroker",
    "MemoryTransport",
    "OutgoingMessage",
    "Transport",
]
