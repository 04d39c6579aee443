"""A throwaway PostgreSQL server from the Debian package, on 127.0.0.1 with a free port.

`start_postgres()` runs initdb into a new data directory (password auth over TCP, so the
password really comes from the environment the tests set; md5 rather than scram-sha-256
because Dagster opens a connection per event write and scram's key stretching tripled the
cost of each on this 2-core machine), starts `postgres` itself (not
through pg_ctl, so the Popen PID is the postmaster) and waits until it accepts connections.
`stop()` and `restart()` signal that PID. initdb refuses to run as root: as root the server
runs as the unprivileged user `nobody`, in a directory under /tmp chowned to it (pytest's
tmp_path sits under a 0700 root directory that `nobody` cannot enter).

Without the binaries the tests are skipped locally and fail under CI (env var CI set): CI must
install the Debian package postgresql.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mlops_core.serving.server import free_port

STARTUP_TIMEOUT_S = 30.0
USER = "mlops"


def postgres_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin holding initdb and postgres."""
    candidates = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not candidates:
        message = "PostgreSQL binaries not found in /usr/lib/postgresql/*/bin; install the Debian package postgresql"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: the production-profile tests must run in CI", pytrace=False)
        pytest.skip(message)
    return candidates[-1]


def _run_as() -> dict:
    """Popen arguments that drop root to `nobody`; nothing when already unprivileged."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


@dataclass
class PostgresServer:
    bin_dir: Path
    root: Path
    port: int
    password: str
    process: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str) -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str):
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=USER, password=self.password, dbname=database
        )
        connection.autocommit = True
        return connection

    def create_database(self, name: str) -> None:
        connection = self.connect("postgres")
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')  # name is a test constant, never user input
        finally:
            connection.close()

    def start(self) -> None:
        args = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.root}",
            "-c",
            "max_connections=200",
            # A throwaway test server: no durability against an OS crash is needed, speed on 2 cores is.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True, **_run_as()
            )
        self.wait_ready()

    def wait_ready(self) -> None:
        import psycopg2

        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                self.connect("postgres").close()
                return
            except psycopg2.OperationalError as err:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres not ready after {STARTUP_TIMEOUT_S} s:\n{self.log.read_text()[-3000:]}"
                    ) from err
                time.sleep(0.05)

    def stop(self, mode: int = signal.SIGINT) -> None:
        """SIGINT is Postgres's fast shutdown: sessions are cut, the data is checkpointed."""
        if self.process is None or self.process.poll() is not None:
            return
        # The postmaster alone: it shuts its backends down itself.
        os.kill(self.process.pid, mode)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self, down_s: float = 0.0, mode: int = signal.SIGINT) -> float:
        """Stop, stay down `down_s`, start again; returns the seconds nothing answered."""
        began = time.monotonic()
        self.stop(mode)
        time.sleep(down_s)
        self.start()
        outage = time.monotonic() - began
        self.restarts.append(outage)
        return outage


def start_postgres(password: str = "s3cret-from-env") -> PostgresServer:
    """initdb into a new directory and start the server; the caller stops it and removes `root`."""
    bin_dir = postgres_bin_dir()
    root = Path(tempfile.mkdtemp(prefix="mlops-pg-", dir="/tmp"))
    owner = _run_as()
    if owner:
        os.chown(root, owner["user"], owner["group"])
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if owner:
        os.chown(pwfile, owner["user"], owner["group"])
    init = subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(root / "data"),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-host=md5",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        **owner,
    )
    pwfile.unlink()
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout[-2000:]}\n{init.stderr[-2000:]}")
    last_error: Exception | None = None
    for _attempt in range(3):  # another process may take the free port between probe and bind
        server = PostgresServer(bin_dir, root, free_port(), password)
        try:
            server.start()
            return server
        except RuntimeError as err:
            server.stop()
            last_error = err
    shutil.rmtree(root, ignore_errors=True)
    raise RuntimeError(f"postgres did not start: {last_error}")


def remove(server: PostgresServer) -> None:
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)
