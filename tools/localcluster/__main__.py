"""`python -m localcluster build|up|down|env`: see cluster.py for what each does."""
from .cli import main

raise SystemExit(main())
