"""The suite's cluster leaves the host as it found it: after a crash (every process SIGKILLed, state left
behind) a new cluster comes up on the same host, and taking it down removes everything an `up` made — the
local cluster's real node (cluster-up/cluster-down) and a kind cluster (kind-up/kind-down) alike. Runs last in
the e2e story, on the suite's own cluster; how each cluster is crashed and inspected is its Target's lifecycle
(testsupport.lifecycle)."""

from __future__ import annotations

import pytest

from testsupport.lifecycle import NOTHING

pytestmark = pytest.mark.order(20)


def test_cluster_up_after_a_crash_then_down_leaves_nothing(real_pods, tmp_path):
    lifecycle = real_pods.lifecycle(tmp_path)
    lifecycle.crash()
    assert lifecycle.up_again() == lifecycle.expected_nodes, "every node of the new cluster is Ready"
    lifecycle.down()
    assert lifecycle.leftovers() == NOTHING
