"""A real PgBouncer in transaction mode in front of the tests' PostgreSQL (what Supabase's port 6543
is): no LISTEN, no session advisory lock, no prepared statement across transactions."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.postgres import PostgresServer
from harness.server import free_port, until


class PgBouncer:
    def __init__(self, postgres: PostgresServer) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not Path(binary).exists():
            raise FileNotFoundError("no pgbouncer (apt-get install pgbouncer)")
        self.postgres = postgres
        self.root = Path(tempfile.mkdtemp(prefix="memvisor-pgbouncer-"))
        self.port = free_port()
        config = self.root / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={postgres.port} user=postgres\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            "auth_type = any\npool_mode = transaction\n"
            "max_client_conn = 500\ndefault_pool_size = 20\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {self.root / 'log'}\n"
        )
        cmd = [binary, str(config)]
        if os.geteuid() == 0:  # it refuses to run as root
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(config, "postgres", "postgres")
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        until(self._accepts, 10, "pgbouncer to accept connections")

    def _accepts(self) -> bool:
        import psycopg

        if self.proc.poll() is not None:
            raise FileNotFoundError(f"pgbouncer exited with {self.proc.returncode}")
        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=1, prepare_threshold=None) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
