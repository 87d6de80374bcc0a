"""The real neonize 0.5.2 LID store, offline: prints what mapping.store_lookup answers.

Run as a script in its own process by tests/test_neonize_fidelity.py (the test process
must never import neonize). A first client creates the sqlite store (its dial is refused);
a LID mapping and a paired-looking device are written into it as whatsmeow would have; a
second client, whose dial hangs on a local proxy, is then asked through neonize's
get_pn_from_lid. argv: store directory.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import sys
import threading

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)      # before neonize's basicConfig
logging.getLogger("neonize.utils.ffmpeg").setLevel(logging.ERROR)

from neonize._binder import ProxySettings  # noqa: E402
from neonize.client import NewClient  # noqa: E402
from neonize.proto.Neonize_pb2 import JID, Device  # noqa: E402

from switchboard.actors.transports.neonize.mapping import store_lookup  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    db = os.path.join(sys.argv[1], "whatsapp.sqlite3")
    first = NewClient(db, uuid="lid-case#1")
    first._stop_finalizer.detach()
    try:
        first.connect(ProxySettings(proxy_address=f"http://127.0.0.1:{free_port()}"))   # refused
    except Exception:
        pass
    with sqlite3.connect(db) as con:
        con.execute("INSERT INTO whatsmeow_lid_map (lid, pn) VALUES (?, ?)", ("204812345678901", "15550006666"))
        key = lambda n, b: bytes([b]) * n          # noqa: E731 - key material of the right sizes
        con.execute("""INSERT INTO whatsmeow_device (jid, lid, registration_id, noise_key, identity_key,
                       signed_pre_key, signed_pre_key_id, signed_pre_key_sig, adv_key, adv_details,
                       adv_account_sig, adv_account_sig_key, adv_device_sig)
                       VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)""",
                    ("15550009999:3@s.whatsapp.net", "111111111111111:3@lid", 1234, key(32, 1), key(32, 2),
                     key(32, 3), 1, key(64, 4), key(32, 5), b"\x01", key(64, 6), key(32, 7), key(64, 8)))
    hold = socket.socket()
    hold.bind(("127.0.0.1", 0))
    hold.listen(5)
    dialled = threading.Event()
    held = []
    threading.Thread(target=lambda: (held.append(hold.accept()), dialled.set()), daemon=True).start()
    second = NewClient(db, uuid="lid-case#2")
    second._stop_finalizer.detach()
    proxy = ProxySettings(proxy_address=f"http://127.0.0.1:{hold.getsockname()[1]}")
    threading.Thread(target=second.connect, args=(proxy,), daemon=True).start()
    if not dialled.wait(30):
        raise SystemExit("the second client never dialled")
    lookup = store_lookup(second)
    out = {"before_device_event": lookup("204812345678901")}
    # neonize's Device event (FetchMe) sets client.me once the device has its ID
    second.me = Device(JID=JID(User="15550009999", Server="s.whatsapp.net", Device=3))
    out["known"] = lookup("204812345678901")
    out["unknown"] = lookup("999999999999999")
    json.dump(out, sys.stdout)
    sys.stdout.flush()
    os._exit(0)                                    # don't wait for neonize's non-daemon threads


if __name__ == "__main__":
    main()
