"""PgBouncer between the app and its database (spec.database.pooler): a Deployment, a Service, a PDB and a
Secret holding its config, its auth file and the URL the app connects to.

The pooler needs the database's user and password, which live in the user's Secret: the operator reads it
and passes the URL in (`Context.database_url`), so rendering stays pure."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from ..schema import FieldError, SpecError
from ..templates import render_template
from ..tuning import POOLER_TIER
from .availability import pdb
from .common import (ROLLING_UPDATE, checksum, deployment, drain_before_stop, metadata, pod_spec, resources,
                     restricted_container_security, restricted_pod_security, service, tcp_probe)
from .context import POOLER_PORT, Context

POOLER_USER = 70  # the postgres user of Alpine-based PgBouncer images; the image needs no write access
SECRET_SUFFIX = "pooler"
# libpq parameters about the client's TLS to the server: they now apply between PgBouncer and the server.
TLS_PARAMETERS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslpassword")
# Placeholder for `flaskapp-operator render` without --database-url: the operator reads the real one.
PLACEHOLDER_URL = "postgresql://USER:PASSWORD@DATABASE_HOST:5432/DATABASE"
SERVER_LIFETIME_SECONDS = 3600  # PgBouncer's default; below most NAT and load balancer idle cut-offs


@dataclass(frozen=True)
class DatabaseUrl:
    scheme: str
    user: str
    password: str
    host: str
    port: int
    dbname: str
    query: tuple[tuple[str, str], ...]

    @property
    def driver(self) -> str:
        """SQLAlchemy's driver name: postgresql+<driver>; plain postgresql is psycopg (3), SQLAlchemy's default
        since 2.1 (psycopg2 before: such apps name it, postgresql+psycopg2://)."""
        return self.scheme.partition("+")[2] or "psycopg"


def parse_database_url(url: str, where: str) -> DatabaseUrl:
    """A PostgreSQL URL as SQLAlchemy and libpq read it; errors name the Secret key it came from."""
    parts = urlsplit(url)
    problems = []
    if parts.scheme.partition("+")[0] not in ("postgresql", "postgres"):
        problems.append("the pooler speaks PostgreSQL: the URL must start with postgresql:// (or postgresql+driver://)")
    if not parts.hostname:
        problems.append("the URL has no host")
    if not parts.username:
        problems.append("the URL has no user: PgBouncer logs in to the server as that user")
    if not parts.path.strip("/"):
        problems.append("the URL has no database name")
    try:
        port = parts.port or 5432
    except ValueError:
        problems.append("the URL's port is not a number")
        port = 5432
    if problems:
        raise SpecError([FieldError(where, "; ".join(problems))])
    db = DatabaseUrl(parts.scheme, unquote(parts.username), unquote(parts.password or ""), parts.hostname, port,
                     unquote(parts.path.strip("/")), tuple(parse_qsl(parts.query)))
    problems = _pgbouncer_problems(db)
    if problems:
        raise SpecError([FieldError(where, "; ".join(problems))])
    return db


# libpq's sslmode values (postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNECT-SSLMODE), which
# PgBouncer's server_tls_sslmode takes as they are.
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_HOST = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$|^[0-9A-Fa-f:.]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _pgbouncer_problems(db: DatabaseUrl) -> list[str]:
    """What of the URL pgbouncer.ini and its auth file could not hold as written: every value is quoted
    (_connstring_value, pooled_database_name, _quoted) except these, and quoting cannot carry a line break or, inside
    PgBouncer's single quotes, a backslash (PgBouncer >= 1.21 reads \\' as an escaped quote)."""
    problems = []
    if not _HOST.match(db.host):
        problems.append(f"the host {db.host!r} is not a DNS name or an IP address")
    for what, value in (("user", db.user), ("password", db.password), ("database name", db.dbname)):
        if _CONTROL.search(value):
            problems.append(f"the {what} holds a control character (a line break would end its line in "
                            "pgbouncer.ini)")
    for what, value in (("user", db.user), ("database name", db.dbname)):
        if "\\" in value:
            problems.append(f"the {what} holds a backslash, which PgBouncer's connection strings cannot quote")
    if db.dbname == "pgbouncer":
        problems.append("the database name pgbouncer is PgBouncer's admin console: use another name")
    sslmode = dict(db.query).get("sslmode", "prefer")
    if sslmode not in SSLMODES:
        problems.append(f"sslmode={sslmode!r} is not one of {', '.join(SSLMODES)}")
    return problems


def _connstring_value(value: str) -> str:
    """A value of a [databases] connection string, single-quoted, a quote written twice
    (pgbouncer.org/config.html#section-databases; PgBouncer's loader.c cstr_unquote_value)."""
    return "'" + value.replace("'", "''") + "'"


def pooled_database_name(name: str) -> str:
    """The name the app asks PgBouncer for (the [databases] key), which `dbname=` maps to the server's database.
    The server's own name when of _0-9A-Za-z (what PgBouncer reads unquoted); else an alias of those characters:
    quoted keys are PgBouncer >= 1.19 only (pgbouncer.org/config.html#section-databases)."""
    if re.fullmatch(r"[_0-9A-Za-z]{1,63}", name):
        return name
    stem = re.sub(r"[^_0-9A-Za-z]+", "_", name).strip("_")[:40] or "db"
    return f"{stem}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def pooler_url(ctx: Context, db: DatabaseUrl) -> str:
    """The URL the app connects to: same driver, user, password and database, at the pooler's Service; the TLS
    parameters stay with PgBouncer (server_tls_sslmode), the rest are passed on."""
    host = ctx.addresses.pooler
    query = urlencode([(k, v) for k, v in db.query if k not in TLS_PARAMETERS])
    userinfo = f"{quote(db.user, safe='')}:{quote(db.password, safe='')}"
    return urlunsplit((db.scheme, f"{userinfo}@{host}", "/" + pooled_database_name(db.dbname), query, ""))


def _quoted(value: str) -> str:
    """A double-quoted auth_file field: a double quote is written twice (pgbouncer.org/config.html#auth_file)."""
    return '"' + value.replace('"', '""') + '"'


def pooler_files(ctx: Context, db: DatabaseUrl) -> dict[str, str]:
    pooler = ctx.spec.database.pooler
    tier = ctx.tuning.tier(POOLER_TIER)
    sslmode = dict(db.query).get("sslmode", "prefer")  # libpq's default
    ini = render_template(
        "pgbouncer.ini.j2", app=ctx.name, database=pooled_database_name(db.dbname), host=_connstring_value(db.host),
        port=db.port, dbname=_connstring_value(db.dbname), user=_connstring_value(db.user),
        port_listen=ctx.addresses.pooler_listen_port,
        auth_file=f"{ctx.addresses.pooler_config_dir}/userlist.txt",
        pool_mode=pooler.pool_mode, pool_size=tier.pool_size, max_clients=ctx.tuning.pooler_max_clients,
        prepared_statements=pooler.prepared_statements, server_sslmode=sslmode,
        server_lifetime=SERVER_LIFETIME_SECONDS)
    return {"pgbouncer.ini": ini, "userlist.txt": f"{_quoted(db.user)} {_quoted(db.password)}\n",
            "url": pooler_url(ctx, db)}


def database_url(ctx: Context) -> DatabaseUrl:
    db = ctx.spec.database
    return parse_database_url(ctx.database_url or PLACEHOLDER_URL, f"Secret {db.secret_name} key {db.url_key}")


def pooler_secret_checksum(ctx: Context) -> Optional[str]:
    """What app pods must restart for: the URL they were started with (a rotated password)."""
    if not (ctx.spec.database and ctx.spec.database.pooler.enabled):
        return None
    return checksum(pooler_files(ctx, database_url(ctx)))


def pooler_objects(ctx: Context) -> list[dict]:
    if not (ctx.spec.database and ctx.spec.database.pooler.enabled):
        return []
    pooler = ctx.spec.database.pooler
    files = pooler_files(ctx, database_url(ctx))
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": metadata(ctx, ctx.child(SECRET_SUFFIX), POOLER_TIER),
              "data": {k: base64.b64encode(v.encode()).decode() for k, v in files.items()}}
    container = {
        "name": "pgbouncer",
        "image": pooler.image,
        "command": ["pgbouncer", f"{ctx.addresses.pooler_config_dir}/pgbouncer.ini"],
        "ports": [{"name": "postgres", "containerPort": POOLER_PORT, "protocol": "TCP"}],
        "resources": resources(pooler.resources, "pooler"),
        # Ready once it listens. No liveness probe: a TCP check could only repeat readiness (the kernel answers
        # a listening socket), and PgBouncer exits on what it cannot recover from, which the kubelet restarts.
        "readinessProbe": tcp_probe("postgres", period=5),
        # Endpoints drop the pod first; then SIGTERM (PgBouncer closes; clients' pre-ping reconnects elsewhere).
        "lifecycle": drain_before_stop(),
        "securityContext": restricted_container_security(),
        "volumeMounts": [{"name": "pgbouncer", "mountPath": ctx.addresses.pooler_config_dir, "readOnly": True}],
    }
    volume = {"name": "pgbouncer", "secret": {"secretName": ctx.child(SECRET_SUFFIX), "defaultMode": 0o440}}
    pod = pod_spec(ctx, restricted_pod_security(POOLER_USER, fs_group=POOLER_USER), [container], [volume])
    workload = deployment(ctx, POOLER_TIER, pod, replicas=pooler.replicas, strategy=ROLLING_UPDATE,
                          checksum_value=checksum(files), versioned=False)
    return [secret, workload, service(ctx, POOLER_TIER, POOLER_PORT, "postgres", port_name="postgres"),
            pdb(ctx, POOLER_TIER)]


