"""The teacher's progress on the campaign: planned and done updates, latest loss, when it was
ready. Campaigns made before this revision count as having a teacher of 0 updates.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(
            sa.Column("teacher_updates", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("teacher_updates_done", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("teacher_loss", sa.Float(), nullable=True))
        batch.add_column(
            sa.Column("teacher_finished_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        for name in (
            "teacher_finished_at",
            "teacher_loss",
            "teacher_updates_done",
            "teacher_updates",
        ):
            batch.drop_column(name)
