"""What a trusted key may send: its role, and the table of messages each role may send.

A node trusts a key *for a role*, given when the key is added (``caroni trust add
NAME KEY --role ...``):

- a **submitter** starts, cancels and follows workflows on a manager;
- an **agent** answers a manager's requests and reports on the jobs it holds;
- a **manager** asks agents for work and drives the jobs it placed with them.

Without roles, any trusted key could send any message: a submitter's key could
answer fulfillment requests as if it were an agent and hand back forged outputs.
With signatures required, every message must be of a type its signer's role may
send to the kind of node receiving it (:data:`MAY_SEND`); anything else is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class KeyRole(StrEnum):
    SUBMITTER = "submitter"
    AGENT = "agent"
    MANAGER = "manager"


ROLE_CHOICES = "|".join(role.value for role in KeyRole)

# The kinds of receiver: what a message is addressed to. ``client`` is our own
# submit/status clients, which read the manager's WorkFlowStatus answers.
MANAGER, AGENT, CLIENT = "manager", "agent", "client"

MAY_SEND: Mapping[KeyRole, Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        KeyRole.SUBMITTER: {
            MANAGER: frozenset({"WorkFlowCreate", "WorkFlowCancel", "WorkFlowStatusRequest"}),
        },
        KeyRole.AGENT: {
            # Answers to requests, then news and outputs ("data out") of its own jobs.
            MANAGER: frozenset(
                {
                    "JobFulfillmentOffer",
                    "JobFulfillmentDecline",
                    "JobAccepted",
                    "JobStatusUpdate",
                    "JobDataAvailable",
                    "Claim",
                    "JobAssignmentRefusal",
                    "JobFinished",
                }
            ),
        },
        KeyRole.MANAGER: {
            # Requests, the choice among offers, then polls, inputs ("data in") and kills.
            AGENT: frozenset(
                {
                    "JobFulfillmentRequest",
                    "JobFulfillmentOfferAccept",
                    "JobFulfillmentOfferReject",
                    "JobStatusRequest",
                    "JobKill",
                    "JobDataAvailable",
                    "JobAssignment",
                }
            ),
            CLIENT: frozenset({"WorkFlowStatus"}),
        },
    }
)
"""Role -> receiver kind -> the message types a key of that role may send it.

Derived from the conversation in the wire protocol: a site creates a workflow; the
manager requests each step; agents offer or decline; the manager accepts (or
rejects) one offer; the agent confirms the job and reports its status; the manager
sends the job its inputs, polls it, or kills it; the agent sends its outputs back.
``JobDataAvailable`` travels both ways, which is why the receiver counts. Between
our own nodes, an agent may grant claims (``Claim``), under which a manager assigns
jobs straight to it (``JobAssignment``), and the agent refuses one or answers with
its outcome (``JobAssignmentRefusal``, ``JobFinished``).
"""


def parse_role(text: str) -> KeyRole:
    """The role ``text`` names; ValueError saying which roles there are otherwise."""
    try:
        return KeyRole(text.strip().lower())
    except ValueError:
        raise ValueError(f"{text!r} is not a role: give one of {ROLE_CHOICES}") from None


def may_send(role: KeyRole, type_name: str, receiver: str = "") -> bool:
    """Whether a key of ``role`` may send ``type_name`` to a ``receiver`` node (any
    receiver when ``""``)."""
    allowed = MAY_SEND[role]
    if receiver:
        return type_name in allowed.get(receiver, frozenset())
    return any(type_name in types for types in allowed.values())


def role_refusal(role: KeyRole | None, signer: str, type_name: str, receiver: str = "") -> str:
    """Why ``signer`` (a trusted name) may not send ``type_name`` to ``receiver``, or ""."""
    if role is None:
        return (
            f"{type_name} signed by {signer}, a trusted key without a role "
            f"(add it again with --role {ROLE_CHOICES})"
        )
    if may_send(role, type_name, receiver):
        return ""
    kinds = [receiver] if receiver else list(MAY_SEND[role])
    allowed = sorted({name for kind in kinds for name in MAY_SEND[role].get(kind, ())})
    to = f" to {_a(receiver)}" if receiver else ""
    may = f"sends{to} only {', '.join(allowed)}" if allowed else f"sends nothing{to}"
    return f"{type_name} signed by {signer}, whose role is {role}: {_a(role)} {may}"


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun
