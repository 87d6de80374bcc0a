"""The session actor on the remote simulated transport: the faults the actor already
handles, through a real socket to the service's parts (in this process, for speed; the
subprocess tests are in test_simulated_service.py)."""
from __future__ import annotations

import pytest

from switchboard.supervision import Switchboard

from tests.support.http import wait_until
from tests.support.sessions import FAST_SETTINGS, StateWaiter
from tests.support.simulator import ServiceInThread

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def service(tmp_path):
    with ServiceInThread() as s:
        yield s


@pytest.fixture
def gateway(service, tmp_path):
    board = Switchboard(data_dir=tmp_path / "gw", transport="simulated", settings=FAST_SETTINGS,
                        transport_options={"simulator_url": service.url}).start()
    waiter = StateWaiter(board)
    yield board, waiter
    waiter.close()
    board.stop()


def linked(board, waiter, service, company_id="acme", phone="79990001122"):
    board.session(company_id).start().get(timeout=5)
    waiter.state(company_id, "qr")
    service.client.scan(company_id, phone)
    return waiter.state(company_id, "connected")


def test_the_board_has_no_in_process_network(gateway):
    board, _ = gateway
    assert board.network is None and board.transport.name == "simulated"


def test_drop_then_the_actor_reconnects_on_a_new_socket(gateway, service):
    board, waiter = gateway
    linked(board, waiter, service)
    service.client.fault("acme", "drop")
    assert wait_until(lambda: any(e.kind == "state" and e.data["state"] == "reconnecting"
                                  for e in board.bus.recent(0)), timeout=10)
    waiter.state("acme", "connected", timeout=10)
    assert service.net.max_seen("acme") == 1 and service.net.live_count("acme") == 1
    receipt = board.session("acme").send("79001234567", "after the drop").get(timeout=5)
    assert receipt.delivered.result(timeout=5) == service.client.messages("79001234567")[0]["id"]


def test_replaced_goes_to_conflict_and_logout_forgets_the_credentials(gateway, service, tmp_path):
    board, waiter = gateway
    linked(board, waiter, service)
    service.client.fault("acme", "replace")
    waiter.state("acme", "conflict")
    assert service.net.live_count("acme") == 0
    board.session("acme").reconnect().get(timeout=5)
    waiter.state("acme", "connected")
    service.client.fault("acme", "logout", code=406)
    waiter.state("acme", "logged_out")
    assert not (tmp_path / "gw" / "acme" / "simulated-device.json").exists()
    assert service.net.max_seen("acme") == 1


def test_a_stopped_board_leaves_no_link_behind(gateway, service):
    board, waiter = gateway
    for company_id, phone in (("a", "79990000001"), ("b", "79990000002")):
        linked(board, waiter, service, company_id, phone)
    board.stop()
    assert service.net.live_count("a") == service.net.live_count("b") == 0
    assert not board.transport._links


def test_faults_with_their_fields_over_http_reach_the_session(gateway, service):
    import queue
    from switchboard.actors.connection import SendError
    board, waiter = gateway
    linked(board, waiter, service)
    received: queue.Queue = queue.Queue()
    board.on_message(received.put, company_id="acme")
    # a sender arriving as its LID still reaches the session with its phone
    service.client.deliver_inbound("acme", "79005550000", "from a LID", as_lid=True)
    message = received.get(timeout=5)
    assert message.phone == "79005550000" and message.text == "from a LID"
    # a number that is not on WhatsApp: the send fails for good, nothing reached anyone
    service.client.fault("acme", "no-lid", phone="79001230000")
    receipt = board.session("acme").send("79001230000", "anyone?").get(timeout=5)
    with pytest.raises(SendError) as failed:
        receipt.delivered.result(timeout=5)
    assert "not on WhatsApp" in str(failed.value) and service.client.messages("79001230000") == []
    # a QR login that ends with a pairing error stops the session with that reason
    board.session("qr-co").start().get(timeout=5)
    waiter.state("qr-co", "qr")
    service.client.fault("qr-co", "login", outcome="error")
    status = waiter.state("qr-co", "stopped")
    assert service.client.live_count("qr-co") == 0, status
