"""Server classes the Available tests run in real pods (importable with the project root on
`PYTHONPATH`, which the test sets through the ClusteredServer's `template.spec.env`).

`MergeRefusingIdServer` is id_server whose `merge` raises while a switch file exists. A real
`merge` must be a pure function of its two states: the MERGE entry is applied by the winner
and again by every standby, and they must all reach the same state. An external switch is
acceptable here because the test flips it only while no MERGE entry is in flight (before the
heal, and after every failed attempt has been applied everywhere), so every replica sees the
same switch position for every MERGE entry; what it buys is a merge that fails for real,
through the real operator, runtime and replication, and then succeeds without restarting
anything.
"""

from __future__ import annotations

import os

from gencluster_examples.id_server import IdServer

SWITCH_VARIABLE = "GENCLUSTER_TEST_REFUSE_MERGE_WHILE"
"""Container variable naming the switch file (read at every merge, never at import)."""


class MergeRefusingIdServer(IdServer):
    def merge(self, state_a: int, state_b: int) -> int:
        switch = os.environ.get(SWITCH_VARIABLE, "")
        if switch and os.path.exists(switch):
            raise RuntimeError(f"merge refused while {switch} exists")
        return super().merge(state_a, state_b)
