"""The stateful gateway test (tests/test_stateful.py) again, with every company linked to
the simulator's service over sockets, plus a rule that restarts the whole gateway: its
links really close, the new one reconnects with the stored credentials, and the
invariants (never two live links for one company, every accepted send delivered once the
faults stop) hold across it."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, rule

from switchboard.supervision import Switchboard

from .support.sessions import FAST_RESTARTS, FAST_SETTINGS
from .support.simulator import ServiceInThread
from .test_stateful import SETTLED, GatewayMachine


class RemoteGatewayMachine(GatewayMachine):
    def __init__(self) -> None:
        RuleBasedStateMachine.__init__(self)
        self.dir = Path(tempfile.mkdtemp(prefix="switchboard-stateful-remote-"))
        self.service = ServiceInThread(qr_first=5.0, qr_next=1.0)
        self.network = self.service.net
        self.board = self._board()
        self.accepted = {c: [] for c in ("c0", "c1", "c2")}
        self.counter = 0
        self.faults_since_link = {c: set() for c in ("c0", "c1", "c2")}

    def _board(self) -> Switchboard:
        return Switchboard(data_dir=self.dir, transport="simulated", settings=FAST_SETTINGS,
                           restart_policy=FAST_RESTARTS,
                           transport_options={"simulator_url": self.service.url}).start()

    @rule()
    def restart_gateway(self):
        """Stop the gateway (its sockets close) and start a new one on the same data."""
        self.board.stop()
        assert all(self.network.live_count(c) == 0 for c in self.accepted), self.network.connections()
        self.board = self._board()
        for company_id in self.board.company_ids():
            self.handle(company_id).wait_for(*SETTLED, "reconnecting", "banned", timeout=10)

    def teardown(self) -> None:
        try:
            self._faults_stop_and_sessions_recover()
        finally:
            self.board.stop()
            self.service.stop()
            shutil.rmtree(self.dir, ignore_errors=True)


RemoteGatewayMachine.TestCase.settings = settings(
    GatewayMachine.TestCase.settings,
    max_examples=int(os.environ.get("SWITCHBOARD_STATEFUL_REMOTE_EXAMPLES", "12")))
TestRemoteGateway = RemoteGatewayMachine.TestCase
