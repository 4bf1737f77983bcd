"""Alembic environment: runs on the connection the appliance hands over (see appliance.db.Database.migrate)."""

from alembic import context

from appliance.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
