"""Evaluation progress: the samples a round's evaluation draws and those drawn yet (rounds made
before this revision read 0 of 0), and those drawn yet for the teacher's FID.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        for name in ("eval_samples", "eval_samples_done"):
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(
            sa.Column("teacher_eval_samples_done", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("teacher_eval_samples_done")
    with op.batch_alter_table("rounds") as batch:
        for name in ("eval_samples_done", "eval_samples"):
            batch.drop_column(name)
