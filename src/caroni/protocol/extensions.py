"""Extensions of the conversation between Caroni nodes of this implementation.

Every envelope we seal lists the extensions its sender speaks (field 103, which
other implementations ignore). A node uses an extension with a peer only once the
peer has announced it, so peers that speak only the shared protocol see exactly
the shared conversation.
"""

from __future__ import annotations

SILENT_DECLINES = "caroni.silent-declines/1"
"""A manager that announces it does not wait for declines of job types an agent
does not serve; an agent that speaks it answers such requests with silence. With
many agents, declines were most of the messages of a request."""

TYPED_REQUESTS = "caroni.typed-requests/1"
"""A manager that announces it publishes a request to the key of its job type
(``routing.fulfillment_key_for``) first, and to the plain broadcast key as well
only when it broadcasts it again; an agent that speaks it binds the keys of the
types it serves, and leaves the plain copies of such a manager's requests alone
(it hears the typed copy). Agents that serve other types never see the request."""

CLAIMS = "caroni.claims/1"
"""An agent that announces it may grant a manager that announced it a claim with an
offer: capacity for job types for a while. Under a live claim the manager assigns
steps of those types straight to the agent (``JobAssignment``, carrying the inputs
known so far), and the agent answers with the outcome in one message
(``JobFinished``, which also renews the claim) or refuses (``JobAssignmentRefusal``),
whereupon the manager requests the step by broadcast. The agent reports no progress
of such a job unless asked (``JobStatusRequest``)."""

BUNDLES = "caroni.bundles/1"
"""A node that announces it reads a ``MessageBundle``: several envelopes for it in one
broker message, which it applies in one transaction. A node bundles what it
publishes at once to one peer's own key, once that peer has announced it
(``protocol.bundles``). Under load this divides the broker's and the AMQP client's
cost per message by the bundle's size."""

SPOKEN: frozenset[str] = frozenset({SILENT_DECLINES, TYPED_REQUESTS, CLAIMS, BUNDLES})
"""What our nodes speak unless told to speak only the shared protocol."""

MAX_EXTENSIONS = 16  # announced per envelope; more is refused as bad input
