"""forecast paths: each stored forecast row is one step of a path made at one origin

``step`` (1..h) is how many steps after its origin a row's target lies; ``origin_ts`` is the
timestamp of the last observation the path was made from. Rows stored before paths existed
were all one step ahead: they read as step 1, their origin unknown (NULL). The rows of one path
share series, origin, maker and ``made_at``. ``series.horizon`` is the path length the config asks
for (NULL: the frequency's default), what a baseline serves before any model.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.add_column(sa.Column('horizon', sa.Integer(), nullable=True))
    with op.batch_alter_table('forecasts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('step', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('origin_ts', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('forecasts', schema=None) as batch_op:
        batch_op.drop_column('origin_ts')
        batch_op.drop_column('step')
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.drop_column('horizon')
