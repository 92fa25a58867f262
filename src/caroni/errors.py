"""One exception hierarchy for the whole package.

Every error Caroni raises on purpose derives from :class:`CaroniError`, so callers
can catch "anything Caroni refused" in one place and let real bugs propagate.
"""

from __future__ import annotations


class CaroniError(Exception):
    """Base of every error Caroni raises on purpose."""


class ConfigError(CaroniError):
    """A setting is missing or malformed."""


class EnvelopeError(CaroniError):
    """A message body cannot be opened: not protobuf, unknown type, too large, bad field."""


class TransportError(CaroniError):
    """The broker refused or lost something, and the transport has stopped retrying:
    the message cannot be sent as it is (a routing key too long), or its publish
    timeout ran out; the caller decides whether to try again later."""


class TemplateError(CaroniError):
    """A workflow template is outside the supported CWL subset or is not valid CWL.

    ``problems`` lists every problem found, each naming the offending field.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = problems if problems is not None else [message]


class JobTypeError(CaroniError):
    """A job type definition is malformed."""


class RefusedError(CaroniError):
    """A request was understood and refused (unknown template, missing inputs, ...)."""


class SetAside(CaroniError):
    """A message was understood but cannot be applied (unknown job, wrong sender, ...).

    The node keeps serving; the delivery is stored as a dead letter with this reason.
    """
