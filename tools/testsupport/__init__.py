"""What the test suites and benchmarks share: waiting on conditions (waiting.py), the sample FlaskApps
(samples.py), a cluster and the operator as a process (kube.py), and an in-memory cluster for passes
(memorycluster.py). Installed with the development tools (tools/pyproject.toml), importable everywhere."""
