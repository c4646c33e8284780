"""Values from the database URL reach pgbouncer.ini and its auth file quoted: a user, a password and a database
name with quotes, spaces and punctuation work through the real PgBouncer to the real PostgreSQL; what no quoting
can carry (a line break, a backslash in PgBouncer's quotes, an sslmode libpq does not know) is refused naming the
Secret key, and nothing of it becomes a line of the file."""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from flaskapp_operator.builders.context import Addresses
from flaskapp_operator.render import render
from flaskapp_operator.schema import SpecError
from testsupport.stack import as_user, free_ports, wait_port

pytestmark = pytest.mark.workload

USER, PASSWORD, DATABASE = "o'brien \"ops\"", "p'w \"x\" #;=%", "shop's \"db\" v2"


def pooled_app(url: str, config_dir: Path, port: int):
    document = {"apiVersion": "flaskapp.dev/v1alpha1", "kind": "FlaskApp",
                "metadata": {"name": "quoting", "namespace": "workload"},
                "spec": {"image": "registry.example/app:1", "wsgi": "app:app",
                         "database": {"secretName": "db", "maxConnections": 20,
                                      "pooler": {"enabled": True, "replicas": 1}}}}
    addresses = Addresses(gunicorn_bind="127.0.0.1:1", nginx_listen="127.0.0.1:2", upstream="127.0.0.1:1",
                          redis_cache="127.0.0.1:3", redis_broker="127.0.0.1:4", pooler=f"127.0.0.1:{port}",
                          pooler_listen_port=port, pooler_config_dir=str(config_dir))
    return render(document, redis_password="pw", addresses=addresses, database_url=url)


def test_quoted_names_work_through_the_real_pgbouncer(stack):
    if shutil.which("pgbouncer") is None:
        pytest.fail("missing pgbouncer: run `make debs` (make test does it)")
    server = stack.ports["postgres"]
    with psycopg.connect(host="127.0.0.1", port=server, user="postgres", dbname="postgres", autocommit=True) as c:
        quoted_user, quoted_db = '"' + USER.replace('"', '""') + '"', '"' + DATABASE.replace('"', '""') + '"'
        c.execute(f"DROP DATABASE IF EXISTS {quoted_db}")
        c.execute(f"DROP ROLE IF EXISTS {quoted_user}")
        c.execute(f"CREATE ROLE {quoted_user} LOGIN PASSWORD " + "'" + PASSWORD.replace("'", "''") + "'")
        c.execute(f"CREATE DATABASE {quoted_db} OWNER {quoted_user}")
    config = Path(tempfile.mkdtemp(prefix="flaskapp-pgbouncer-"))
    config.chmod(0o755)
    (port,) = free_ports(1)
    url = (f"postgresql+psycopg://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@127.0.0.1:{server}/"
           f"{quote(DATABASE, safe='')}?sslmode=disable&application_name=quoting")
    rendered = pooled_app(url, config, port)
    secret = next(o for o in rendered.objects if o["kind"] == "Secret" and o["metadata"]["name"] == "quoting-pooler")
    files = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    for key in ("pgbouncer.ini", "userlist.txt"):
        (config / key).write_text(files[key])
        (config / key).chmod(0o644)
    command = next(o for o in rendered.objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith(
        "-pooler"))["spec"]["template"]["spec"]["containers"][0]["command"]
    log = config / "pgbouncer.log"
    proc = subprocess.Popen(command, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
                            **as_user("postgres"))
    try:
        wait_port(port, proc, log=log)
        app_url = files["url"].replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(app_url) as conn:
            assert conn.execute("select current_user, current_database()").fetchone() == (USER, DATABASE)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(config, ignore_errors=True)


@pytest.mark.parametrize("url, problem", [
    ("postgresql://u:p@db:5432/app?sslmode=disable%0Aauth_type%3Dtrust", "sslmode="),
    ("postgresql://u%0Aadmin_users%3Du:p@db:5432/app", "the user holds a control character"),
    ("postgresql://u:p%0A@db:5432/app", "the password holds a control character"),
    ("postgresql://u:p@db:5432/a%0Apool_mode%3Dsession", "the database name holds a control character"),
    ("postgresql://u%5C:p@db:5432/app", "the user holds a backslash"),
    ("postgresql://u:p@db:5432/pgbouncer", "admin console"),
    ("postgresql://u:p@db%20x:5432/app", "is not a DNS name"),
])
def test_what_no_quoting_carries_is_refused_naming_the_secret(url, problem, tmp_path):
    with pytest.raises(SpecError) as refused:
        pooled_app(url, tmp_path, 6432)
    (error,) = refused.value.errors
    assert error.path == "Secret db key url" and problem in error.message, error
