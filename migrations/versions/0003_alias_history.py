"""alias history: what served each series (a model version or the baseline), in order

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 13:30:00

Rollback walks this history back, so it can return to a baseline that served
before. Existing champions are recorded as one ``migrated`` entry each; rolling
back past that entry returns to the baseline.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alias_history',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('series_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('made_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('undone_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'],
                            name=op.f('fk_alias_history_model_version_id_model_versions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['series_id'], ['series.id'], name=op.f('fk_alias_history_series_id_series'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alias_history'))
    )
    with op.batch_alter_table('alias_history', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alias_history_series_id'), ['series_id'], unique=False)
    op.execute(
        "INSERT INTO alias_history (series_id, name, model_version_id, action, reason, made_at) "
        "SELECT series_id, name, model_version_id, 'migrated', 'champion when the history began', updated_at "
        "FROM aliases"
    )


def downgrade() -> None:
    with op.batch_alter_table('alias_history', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alias_history_series_id'))
    op.drop_table('alias_history')
