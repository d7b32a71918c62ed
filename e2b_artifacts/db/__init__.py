"""E2B's PostgreSQL schema: find it, check it against known goose migrations, register builds.

``known`` reads ``data/migrations.json``; ``schema`` connects, inspects and checks
(``apply`` runs the known fixes); ``register`` upserts a build's rows. psycopg (3) is
imported only when a connection is made.
"""
