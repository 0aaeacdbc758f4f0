"""Initial schema: teams, tokens, campaigns, rounds, trials, audit events.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Written out in full rather than imported from the models, so this revision keeps describing
the schema it created when the models change later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _status(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("gpu_quota", sa.Float(), nullable=False),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teams")),
        sa.UniqueConstraint("name", name=op.f("uq_teams_name")),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        _ts("created_at", nullable=False),
        _ts("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_tokens_team_id_teams"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_tokens_token_hash")),
    )
    op.create_index(op.f("ix_tokens_team_id"), "tokens", ["team_id"])
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column(
            "status",
            _status(
                "campaign_status",
                "queued",
                "starting",
                "running",
                "succeeded",
                "failed",
                "cancelling",
                "cancelled",
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("gpus", sa.Float(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("submission_id", sa.String(length=128), nullable=True),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("current_round", sa.Integer(), nullable=True),
        sa.Column("rounds_total", sa.Integer(), nullable=False),
        sa.Column("best_fid", sa.Float(), nullable=True),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_campaigns_team_id_teams"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint(
            "team_id", "idempotency_key", name=op.f("uq_campaigns_team_id_idempotency_key")
        ),
    )
    op.create_index(
        "ix_campaigns_team_status_created", "campaigns", ["team_id", "status", "created_at"]
    )
    op.create_index(
        "ix_campaigns_queue", "campaigns", ["status", sa.text("priority DESC"), "created_at"]
    )
    op.create_table(
        "rounds",
        sa.Column("campaign_id", sa.String(length=16), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("teacher_steps", sa.Integer(), nullable=False),
        sa.Column("student_steps", sa.Integer(), nullable=False),
        sa.Column("updates", sa.Integer(), nullable=False),
        sa.Column("updates_done", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            _status(
                "round_status",
                "pending",
                "tuning",
                "training",
                "evaluating",
                "succeeded",
                "failed",
                "cancelled",
            ),
            nullable=False,
        ),
        sa.Column("lr", sa.Float(), nullable=True),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("fid", sa.Float(), nullable=True),
        sa.Column("ddim_fid", sa.Float(), nullable=True),
        sa.Column("wall_seconds", sa.Float(), nullable=True),
        sa.Column("gpu_seconds", sa.Float(), nullable=True),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_rounds_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "k", name=op.f("pk_rounds")),
    )
    op.create_table(
        "trials",
        sa.Column("campaign_id", sa.String(length=16), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("lr", sa.Float(), nullable=False),
        sa.Column("val_loss", sa.Float(), nullable=True),
        sa.Column(
            "status",
            _status("trial_status", "pending", "running", "stopped", "succeeded", "failed"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id", "k"],
            ["rounds.campaign_id", "rounds.k"],
            name=op.f("fk_trials_campaign_id_rounds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "k", "index", name=op.f("pk_trials")),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.String(length=16), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        _ts("at", nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_audit_events_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(op.f("ix_audit_events_campaign_id"), "audit_events", ["campaign_id"])


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_table("trials")
    op.drop_table("rounds")
    op.drop_table("campaigns")
    op.drop_table("tokens")
    op.drop_table("teams")
