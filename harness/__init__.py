"""What the tests and the benchmark share to run the real service: the server as a subprocess driven
over HTTP (server.py), the 512 MB container in lab and Render mode (cgroup.py), a real PostgreSQL,
PgBouncer and Chroma server (postgres.py, pgbouncer.py, chroma.py), and the hostile minute's seeded
task mix (hostile_mix.py). It imports the product and nothing of tests/ or bench/; both import it.
It is not part of the installed package.
"""
