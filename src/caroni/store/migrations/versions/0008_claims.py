"""claims

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 20:10:00.000000

Claims between our own nodes (the caroni.claims/1 extension): the claims an agent
granted (``granted_claims``), the claims a manager holds (``held_claims``), and the
claim each assigned job runs under (``jobs.claim_uuid``, NULL for jobs placed by
offer, as every job was before), and the steps waiting for an agent
(``waiting_steps``), which a claim with room takes at once. Steps that waited
before this migration are not listed: they are placed at their next broadcast,
as before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "held_claims",
        sa.Column("claim_uuid", sa.String(length=32), primary_key=True),
        sa.Column("agent_key", sa.String(length=255), nullable=False),
        sa.Column("agent_site", sa.String(length=255), nullable=False),
        sa.Column("job_types", sa.Text(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("in_use", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_held_claims_expires_at", "held_claims", ["expires_at"])
    op.create_table(
        "granted_claims",
        sa.Column("claim_uuid", sa.String(length=32), primary_key=True),
        sa.Column("manager_key", sa.String(length=255), nullable=False),
        sa.Column("job_types", sa.Text(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_granted_claims_manager_key", "granted_claims", ["manager_key"])
    op.create_index("ix_granted_claims_expires_at", "granted_claims", ["expires_at"])
    op.create_table(
        "waiting_steps",
        sa.Column("workflow_id", sa.String(length=32), primary_key=True),
        sa.Column("step_name", sa.String(length=255), primary_key=True),
        sa.Column("job_type", sa.String(length=255), nullable=False),
        sa.Column("since", sa.Float(), nullable=False),
    )
    op.create_index("ix_waiting_steps_job_type_since", "waiting_steps", ["job_type", "since"])
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claim_uuid", sa.String(length=32), nullable=True))
        batch_op.create_index("ix_jobs_claim_uuid", ["claim_uuid"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_waiting_steps_job_type_since", table_name="waiting_steps")
    op.drop_table("waiting_steps")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_claim_uuid")
        batch_op.drop_column("claim_uuid")
    op.drop_index("ix_granted_claims_expires_at", table_name="granted_claims")
    op.drop_index("ix_granted_claims_manager_key", table_name="granted_claims")
    op.drop_table("granted_claims")
    op.drop_index("ix_held_claims_expires_at", table_name="held_claims")
    op.drop_table("held_claims")
