"""offer state index

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 02:05:00.000000

An agent counts and expires its open offers on every batch of requests and every
timer pass; without this index each of those scans every offer it ever made.
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.create_index("ix_offers_state_expires", ["state", "expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.drop_index("ix_offers_state_expires")
