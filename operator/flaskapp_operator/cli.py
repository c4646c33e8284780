"""`flaskapp-operator render -f app.yaml` prints what the operator would apply; `run` starts it."""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import Optional, Sequence

import yaml

from .crd import crd_yaml
from .render import render
from .schema import SpecError

# Not __doc__: the image runs Python with -OO (PYTHONOPTIMIZE=2), which drops docstrings.
DESCRIPTION = "Render what the flaskapp-operator would apply for a FlaskApp, or run the operator."
EXIT_INVALID = 2  # the input is wrong: an error names the field
EXIT_INFEASIBLE = 3  # valid, but the connection budget cannot hold: the operator would report Degraded


def _load_documents(path: str) -> list[dict]:
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with stream:
        return [d for d in yaml.safe_load_all(stream) if d is not None]


def _identity(doc: object) -> Optional[tuple[str, str]]:
    """(namespace, name) of a document as far as it has them, for messages and the duplicate check."""
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    return (meta.get("namespace") or "default", meta.get("name", "?")) if isinstance(meta, dict) else None


def cmd_render(args: argparse.Namespace) -> int:
    try:
        documents = _load_documents(args.filename)
    except (OSError, yaml.YAMLError) as exc:
        print(f"error: cannot read {args.filename}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if not documents:
        print(f"error: {args.filename} holds no FlaskApp", file=sys.stderr)
        return EXIT_INVALID
    seen: set = set()
    out = []
    for doc in documents:
        key = _identity(doc)
        if key is not None and key in seen:
            print(f"error: FlaskApp {key[1]}: metadata.name: a second document with this name and namespace "
                  f"(kubectl apply would keep only the last)", file=sys.stderr)
            return EXIT_INVALID
        seen.add(key)
        try:
            rendered = render(doc, redis_password=args.redis_password or secrets.token_urlsafe(24),
                              database_url=args.database_url)
        except SpecError as exc:
            name = key[1] if key else "?"
            for error in exc.errors:
                print(f"error: FlaskApp {name}: {error}", file=sys.stderr)
            return EXIT_INVALID
        if not rendered.feasible:
            print(f"error: FlaskApp {doc['metadata']['name']} would be Degraded: "
                  f"{rendered.tuning.budget.message}", file=sys.stderr)
            return EXIT_INFEASIBLE
        database = rendered.spec.database
        if database and database.pooler.enabled and not args.database_url:
            print(f"note: FlaskApp {doc['metadata']['name']}: the pooler's Secret holds a placeholder database URL "
                  f"(the operator reads Secret {database.secret_name} key {database.url_key}; pass --database-url)",
                  file=sys.stderr)
        if rendered.tuning.capped:
            print(f"note: FlaskApp {doc['metadata']['name']}: {rendered.tuning.budget.message}", file=sys.stderr)
        out.extend(rendered.objects)
        if args.tuning:
            print(yaml.safe_dump({"tuning": rendered.tuning.report()}, sort_keys=False), file=sys.stderr)
    sys.stdout.write(yaml.safe_dump_all(out, sort_keys=False, width=120))
    return 0


def cmd_crd(_args: argparse.Namespace) -> int:
    sys.stdout.write(crd_yaml())
    return 0


def cmd_api_docs(_args: argparse.Namespace) -> int:
    from .apidocs import api_reference

    sys.stdout.write(api_reference())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .main import run_operator  # kopf is imported only when the operator runs
    from .settings import Settings

    return run_operator(Settings.from_command_line(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flaskapp-operator", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("render", help="print the Kubernetes objects the operator would apply")
    p.add_argument("-f", "--filename", required=True, help="FlaskApp YAML file, or - for stdin")
    p.add_argument("--redis-password", help="password for the managed Redis Secret (random if unset)")
    p.add_argument("--tuning", action="store_true", help="also print the tuning report on stderr")
    p.add_argument("--database-url", help="the URL in the database Secret, which configures spec.database.pooler "
                                          "(the operator reads it from the Secret; a placeholder when unset)")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("crd", help="print the CustomResourceDefinition")
    p.set_defaults(func=cmd_crd)

    p = sub.add_parser("api-docs", help="print the API reference (Markdown) generated from the model")
    p.set_defaults(func=cmd_api_docs)

    p = sub.add_parser("run", help="run the operator against the current kube context")
    p.add_argument("-n", "--namespace", action="append",
                   help="namespace to watch (repeatable); all namespaces by default")
    p.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                   help="liveness endpoint for the kubelet's probe")
    p.add_argument("--metrics-address", default="0.0.0.0:8081",
                   help="host:port of /metrics (Prometheus) and /readyz (the kubelet's readiness probe); "
                        "empty to disable")
    p.add_argument("--leader-elect", action="store_true",
                   help="run as one of several replicas: only the holder of a coordination.k8s.io Lease reconciles")
    p.add_argument("--lease-name", default="flaskapp-operator", help="name of the Lease (default: %(default)s)")
    p.add_argument("--lease-namespace", help="namespace of the Lease (default: $POD_NAMESPACE)")
    p.add_argument("--prometheus-url", default="",
                   help="a Prometheus that scrapes the apps' PodMonitors (e.g. http://prometheus.monitoring:9090): "
                        "the operator reads the in-process agent's reports from it into each FlaskApp's "
                        "BudgetGuaranteed condition; empty: that condition is Unknown")
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
