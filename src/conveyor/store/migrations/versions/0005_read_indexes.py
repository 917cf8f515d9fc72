"""indexes for the read commands at scale

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

`conveyor runs` lists a project's newest runs (ix_runs_project alone made SQLite sort every run
of the project), `events --id` and `release show` find one entity's events without knowing its
kind (ix_events_entity leads with the kind of entity, so these scanned the whole log), and
`releases` lists the newest releases. With 100,000 runs and 1,000,000 events each of these
is an index walk instead of a scan or a sort.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_project_started", "runs", ["project", "started_at"])
    op.create_index("ix_events_entity_id", "events", ["entity_id"])
    op.create_index("ix_releases_created_at", "releases", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_releases_created_at", table_name="releases")
    op.drop_index("ix_events_entity_id", table_name="events")
    op.drop_index("ix_runs_project_started", table_name="runs")
