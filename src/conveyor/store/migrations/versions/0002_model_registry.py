"""model registry: versions and aliases

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("task", sa.String(length=20), nullable=False),
        sa.Column("file", sa.JSON(), nullable=False),
        sa.Column("onnx", sa.JSON(), nullable=True),
        sa.Column("signature", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("slices", sa.JSON(), nullable=False),
        sa.Column("gates", sa.JSON(), nullable=False),
        sa.Column("plots", sa.JSON(), nullable=False),
        sa.Column("lineage", sa.JSON(), nullable=False),
        sa.Column("holdout", sa.JSON(), nullable=False),
        sa.Column("references", sa.JSON(), nullable=False),
        sa.Column("card", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_model_versions_model_version", "model_versions", ["model", "version"], unique=True
    )
    op.create_index(op.f("ix_model_versions_project"), "model_versions", ["project"])
    op.create_index(op.f("ix_model_versions_run_id"), "model_versions", ["run_id"])
    op.create_table(
        "aliases",
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("alias", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model", "alias"),
    )


def downgrade() -> None:
    op.drop_table("aliases")
    op.drop_index(op.f("ix_model_versions_run_id"), table_name="model_versions")
    op.drop_index(op.f("ix_model_versions_project"), table_name="model_versions")
    op.drop_index("ix_model_versions_model_version", table_name="model_versions")
    op.drop_table("model_versions")
