"""Evaluation progress: the samples a round's evaluation draws and those drawn yet, and those
drawn yet for the teacher's FID. Existing rounds get their count from their campaign's spec
(2 × evaluation.samples: the student's and DDIM's), all drawn when the round succeeded; a spec
without the field leaves them at 0 of 0.

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
    _count_existing_rounds()
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


def _count_existing_rounds() -> None:
    campaigns = sa.table("campaigns", sa.column("id", sa.String), sa.column("spec", sa.JSON))
    rounds = sa.table(
        "rounds",
        sa.column("campaign_id", sa.String),
        sa.column("status", sa.String),
        sa.column("eval_samples", sa.Integer),
        sa.column("eval_samples_done", sa.Integer),
    )
    bind = op.get_bind()
    for campaign_id, spec in bind.execute(sa.select(campaigns.c.id, campaigns.c.spec)).all():
        samples = ((spec or {}).get("evaluation") or {}).get("samples")
        if not isinstance(samples, int):
            continue
        of_campaign = rounds.update().where(rounds.c.campaign_id == campaign_id)
        bind.execute(of_campaign.values(eval_samples=2 * samples))
        succeeded = of_campaign.where(rounds.c.status == "succeeded")
        bind.execute(succeeded.values(eval_samples_done=2 * samples))
