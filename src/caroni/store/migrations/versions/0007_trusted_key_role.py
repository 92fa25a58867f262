"""trusted key role

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 17:20:00.000000

Every trusted key gets a role (submitter, agent or manager) that limits what it may
send. Keys trusted before roles existed keep no role (NULL): a node that requires
signatures refuses what they sign, saying so, until they are added again with
``caroni trust add NAME KEY --role ...``. The migration cannot tell what a key was
meant for (a manager's unbound keys may be submitters or agents), and a wrong
guess would grant exactly what roles take away: a submitter's key answering as an
agent. Nodes that do not require signatures do not check roles, so they work as
before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trusted_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trusted_keys", schema=None) as batch_op:
        batch_op.drop_column("role")
