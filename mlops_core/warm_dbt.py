"""`mlops-dbt`: the dbt CLI without paying for dbt's imports on every command.

Every `dbt build` is a new Python process, and importing dbt (its dataclass schemas, adapters, Jinja) costs
2-3 s of CPU before any work: sampled over the bad-input tests, 45% of all CPU was dbt importing itself, and
20% of a closed-loop simulation's. dagster-dbt runs dbt as an executable (DbtCliResource.dbt_executable), so
this module is one: the first call starts a server that imports dbt once, and each call after it forks a
child of that server with the caller's arguments, working directory, environment and stdin/stdout/stderr.
The child is a fresh dbt process in all but its imports: the server only imports modules, never runs dbt,
opens a file or starts a thread, so nothing one command does is seen by the next.

- Exit status and signals are the child's: SIGINT or SIGTERM to `mlops-dbt` goes to the child, and a
  client that disappears (SIGKILL) takes its child with it.
- The server listens on a Unix socket in a directory only its user can open, keyed by this interpreter and
  the installed dbt versions; it exits after `IDLE_SECONDS` without work.
- Whenever the server cannot be reached or started, `mlops-dbt` runs the venv's own `dbt` instead.
- MLOPS_DBT_LAUNCHER=cold (Settings.dbt_launcher) skips all this: production pods run one dbt command
  each and gain nothing.

Only the standard library is imported here: the client's own start-up is what every command still pays.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Imported by the server before it takes any command: dbt's CLI, the DuckDB adapter and what a `dbt build`
# imports lazily (found by diffing sys.modules after a real build).
PRELOAD = (
    "dbt.cli.main",
    "dbt.adapters.duckdb",
    "dbt.task.build",
    "dbt.task.run",
    "dbt.task.test",
    "dbt.task.seed",
    "dbt.task.snapshot",
    "dbt.task.compile",
    "dbt.compilation",
    "dbt.parser.sql",
    "dbt.graph.thread_pool",
    "dbt_common.clients.agate_helper",
    "sqlparse",
    "multiprocessing.pool",
    "multiprocessing.dummy",
)
IDLE_SECONDS = 300.0
# Where the server's socket, pid file and log live (default: $XDG_RUNTIME_DIR or the temp dir, mlops-dbt-<uid>).
# The test session sets its own, so it stops the server it started.
SOCKET_DIR_ENV = "MLOPS_DBT_SOCKET_DIR"
START_TIMEOUT_SECONDS = 120.0
HEADER_BYTES = 8
STD_FDS = (0, 1, 2)
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class NotStarted(Exception):
    """The server took the connection but started no dbt (it was stopping): nothing ran, so ask again."""


class Unavailable(Exception):
    """The warm server can be neither reached nor started; the caller runs the cold dbt."""


def cold_dbt() -> str:
    """The venv's own dbt executable."""
    return str(Path(sys.executable).with_name("dbt"))


def _versions() -> str:
    from importlib import metadata

    found = []
    for name in ("dbt-core", "dbt-duckdb", "dbt-adapters"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name}=={metadata.version(name)}")
    return ",".join(found)


def socket_path() -> Path:
    """Where this venv's server listens: one per user, venv and dbt version. The directory is
    the user's alone (mode 0700), so no other user can connect and have commands run as this one."""
    base = Path(
        os.environ.get(SOCKET_DIR_ENV)
        or Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"mlops-dbt-{os.getuid()}"
    )
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    if base.stat().st_uid != os.getuid() or base.stat().st_mode & 0o077:
        raise Unavailable(f"{base} is not private to uid {os.getuid()}")
    # The venv, not the interpreter's real path: every venv of one Python links to the same binary.
    key = hashlib.sha256(f"{sys.prefix}|{sys.executable}|{_versions()}".encode()).hexdigest()[:16]
    return base / f"{key}.sock"


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
            return None
        raise Unavailable(f"cannot connect to {path}: {exc}") from exc
    return sock


def server_pid(path: Path | None = None) -> int | None:
    """The pid of the server listening at `path` (default: this venv's), None when none is."""
    pid_file = (path or socket_path()).with_suffix(".pid")
    try:
        return int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return None


def connect_or_start(path: Path | None = None, idle_seconds: float = IDLE_SECONDS) -> socket.socket:
    """A connection to the server, starting it first when none listens (one starter at a time)."""
    path = path or socket_path()
    sock = _connect(path)
    if sock is not None:
        return sock
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sock = _connect(path)
        if sock is not None:
            return sock
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a server that died left its socket file
        log = open(path.with_suffix(".log"), "ab")
        server = subprocess.Popen(
            [sys.executable, "-m", "mlops_core.warm_dbt", "--serve", str(path), str(idle_seconds)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # outlives this command; never gets the terminal's Ctrl-C
            close_fds=True,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            sock = _connect(path)
            if sock is not None:
                return sock
            if server.poll() is not None:
                raise Unavailable(f"the server exited with {server.returncode} (log: {path.with_suffix('.log')})")
            time.sleep(0.02)
        server.kill()
        raise Unavailable(f"the server did not listen within {START_TIMEOUT_SECONDS:.0f} s")


def _read_line(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            return ""
        data += chunk
    return data.decode().strip()


def run(args: list[str], sock: socket.socket) -> int:
    """Run `dbt args` in a child of the server; return what dbt's exit status would be (128 + signal if a
    signal ended it, as a shell reports)."""
    request = json.dumps({"argv": args, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    child: list[int] = []
    pending: list[int] = []

    def forward(signum, _frame):
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child[0], signum)
        else:
            pending.append(signum)

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    try:
        socket.send_fds(sock, [len(request).to_bytes(HEADER_BYTES, "big")], list(STD_FDS))
        sock.sendall(request)
        first = _read_line(sock)
    except OSError as exc:
        first = f"error {exc}"
    if not first.startswith("pid "):
        if pending:  # interrupted before dbt started: stop here rather than ask again
            return 128 + pending[0]
        raise NotStarted(first or "the connection closed")
    child.append(int(first.split()[1]))
    for signum in pending:
        forward(signum, None)
    try:
        outcome = _read_line(sock)
    except OSError as exc:  # dbt started: never run it a second time, report the loss instead
        outcome = f"error {exc}"
    kind, _, value = outcome.partition(" ")
    if kind == "exit":
        return int(value)
    if kind == "signal":
        return 128 + int(value)
    print(f"mlops-dbt: the connection to dbt's server closed before dbt ended ({outcome!r})", file=sys.stderr)
    return 1


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:  # --serve SOCKET [IDLE_SECONDS]
        serve(Path(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else IDLE_SECONDS)
        return
    args = sys.argv[1:]
    reason = ""
    for _attempt in range(3):
        try:
            sock = connect_or_start()
        except (Unavailable, OSError) as exc:
            reason = str(exc)
            break
        try:
            with sock:
                code = run(args, sock)
        except NotStarted as exc:
            reason = f"the server started no dbt ({exc})"
            continue
        sys.stdout.flush()
        os._exit(code)
    print(f"mlops-dbt: running the cold dbt: {reason}", file=sys.stderr)
    os.execv(cold_dbt(), [cold_dbt(), *args])


# --- the server: single-threaded, so every fork is safe ---------------------------------------------------


def serve(path: Path, idle_seconds: float = IDLE_SECONDS) -> None:
    for name in PRELOAD:
        __import__(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    partial = path.with_name(f"{path.name}.{os.getpid()}")
    listener.bind(str(partial))
    os.chmod(partial, 0o600)
    listener.listen(64)
    os.replace(partial, path)  # listening before it is visible: a client never connects to a half-started server
    path.with_suffix(".pid").write_text(f"{os.getpid()}\n")
    handlers: set[int] = set()
    last_work = time.monotonic()
    signal.signal(signal.SIGTERM, _stop)
    # Whatever the starting shell left (a background job ignores SIGINT, some callers ignore SIGCHLD): the
    # server reaps its handlers itself, and each dbt child sets its own handlers.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        while True:
            ready, _, _ = select.select([listener], [], [], 1.0)
            for pid in list(handlers):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        handlers.discard(pid)
                except ChildProcessError:  # already reaped: gone all the same
                    handlers.discard(pid)
            if handlers:
                last_work = time.monotonic()
            if not ready:
                if not handlers and time.monotonic() - last_work > idle_seconds:
                    # Unlisted first, so the next command starts a new server; then whoever connected in
                    # between is still served.
                    _remove_if_ours(path)
                    while select.select([listener], [], [], 0)[0]:
                        _dispatch(listener)
                    break
                continue
            handlers.add(_dispatch(listener))
            last_work = time.monotonic()
    finally:
        _remove_if_ours(path)
        listener.close()


def _dispatch(listener: socket.socket) -> int:
    """Accept one command and fork its handler; returns the handler's pid."""
    conn, _ = listener.accept()
    pid = os.fork()
    if pid == 0:
        listener.close()
        try:
            _handle(conn)
        finally:
            os._exit(0)
    conn.close()
    return pid


def _stop(_signum, _frame) -> None:
    raise SystemExit(0)  # out of the wait at once; serve's `finally` removes the socket


def _remove_if_ours(path: Path) -> None:
    pid_file = path.with_suffix(".pid")
    with contextlib.suppress(FileNotFoundError, ValueError):
        if int(pid_file.read_text()) == os.getpid():
            path.unlink(missing_ok=True)
            pid_file.unlink(missing_ok=True)


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = conn.recv(min(left, 1 << 16))
        if not chunk:
            raise ConnectionError(f"the request ended {left} bytes short")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _handle(conn: socket.socket) -> None:
    """One command: fork the dbt child, tell the client its pid, then its exit status; kill it if the
    client goes away first."""
    header, fds, _, _ = socket.recv_fds(conn, HEADER_BYTES, len(STD_FDS))
    if len(header) != HEADER_BYTES or len(fds) != len(STD_FDS):
        return
    request = json.loads(_recv_exactly(conn, int.from_bytes(header, "big")))
    child = os.fork()
    if child == 0:
        conn.close()
        _run_dbt(request, fds)
    for fd in fds:
        os.close(fd)
    conn.sendall(f"pid {child}\n".encode())
    status = _wait_or_kill(child, conn)
    with contextlib.suppress(OSError):
        if os.WIFSIGNALED(status):
            conn.sendall(f"signal {os.WTERMSIG(status)}\n".encode())
        else:
            conn.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())


def _wait_or_kill(child: int, conn: socket.socket) -> int:
    pidfd = os.pidfd_open(child)
    try:
        while True:
            ready, _, _ = select.select([pidfd, conn], [], [])
            if pidfd in ready:
                return os.waitpid(child, 0)[1]
            if not conn.recv(1):  # the client is gone: so is its command
                os.kill(child, signal.SIGTERM)
                ready, _, _ = select.select([pidfd], [], [], 10.0)
                if not ready:
                    os.kill(child, signal.SIGKILL)
                return os.waitpid(child, 0)[1]
    finally:
        os.close(pidfd)


def _run_dbt(request: dict, fds: list[int]) -> None:
    code = 1
    try:
        for signum in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in zip(STD_FDS, fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        os.setpgid(0, 0)  # its own process group, as the cold dbt would be apart from the server
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [cold_dbt(), *request["argv"]]
        from dbt.cli.main import cli

        try:
            cli(prog_name="dbt")  # click would name the server's module in its usage messages
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except KeyboardInterrupt:
            code = 130
    except BaseException:  # noqa: BLE001 - the child must exit with a status whatever happened
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        # What a normal exit of the cold dbt runs (multiprocessing's finalizers unlink its semaphores,
        # logging flushes), without unwinding into the server's frames.
        with contextlib.suppress(BaseException):
            import atexit

            atexit._run_exitfuncs()
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    main()
