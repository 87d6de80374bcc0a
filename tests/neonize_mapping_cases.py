"""Builds neonize event protobufs by hand and prints what `map_event` makes of them, as JSON.

Run as a script in its own process by tests/test_neonize_mapping.py: the test process
itself must never import neonize (it would load the Go runtime and hijack logging).
Every event also goes through a serialise/parse round trip, as it does when Go hands it
to Python (`Event.execute` parses the bytes with `FromString`). The identity cases are
mapped a second time with a LID store that knows LID_IN_STORE (keys "store:<case>").
"""
from __future__ import annotations

import json
import logging
import sys

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)   # before neonize's basicConfig

from neonize.events import (ClientOutdatedEv, ConnectedEv, ConnectFailureEv,  # noqa: E402
                            DisconnectedEv, KeepAliveRestoredEv, KeepAliveTimeoutEv, LoggedOutEv,
                            MessageEv, PairStatusEv, PresenceEv, QREv, ReceiptEv, StreamErrorEv,
                            StreamReplacedEv, TemporaryBanEv)
from neonize.proto.Neonize_pb2 import (JID, ConnectFailureReason, MessageInfo,  # noqa: E402
                                       MessageSource, Node, NodeAttrs)
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (DocumentMessage,  # noqa: E402
                                                       ExtendedTextMessage, FutureProofMessage,
                                                       ImageMessage, Message,
                                                       ProtocolMessage, ReactionMessage,
                                                       SenderKeyDistributionMessage, VideoMessage)

from switchboard.actors.transports.neonize.mapping import map_event  # noqa: E402


def jid(user: str, server: str = "s.whatsapp.net", device: int = 0) -> JID:
    return JID(User=user, Server=server, Device=device, RawAgent=0, Integrator=0, IsEmpty=False)


EMPTY = JID(User="", Server="", Device=0, RawAgent=0, Integrator=0, IsEmpty=True)
PN = jid("15550001111")
PN_DEVICE = jid("15550001111", device=7)
LID = jid("204812345678901", "lid")
GROUP = jid("120363025246125888", "g.us")
TS_MS = 1_700_000_000_123
LID_IN_STORE = {"204812345678901": "15550006666"}      # what the LID store knows


def message(src: MessageSource, msg: Message, *, mid: str = "3EB0C0FFEE", ts: int = TS_MS,
            push: str = "Alice", **extra) -> MessageEv:
    # The Go glue always sets SenderAlt/RecipientAlt, empty when unknown.
    if not src.HasField("SenderAlt"):
        src.SenderAlt.CopyFrom(EMPTY)
    info = MessageInfo(MessageSource=src, ID=mid, Pushname=push, Timestamp=ts, Type="text")
    return MessageEv(Info=info, Message=msg, **extra)


def cases() -> dict[str, object]:
    one_to_one = MessageSource(Chat=PN, Sender=PN_DEVICE, IsFromMe=False, IsGroup=False)
    return {
        "conversation": message(one_to_one, Message(conversation="hello")),
        "extended_text": message(one_to_one, Message(
            extendedTextMessage=ExtendedTextMessage(text="see https://example.com"))),
        "image_caption": message(one_to_one, Message(
            imageMessage=ImageMessage(caption="a cat", mimetype="image/jpeg"))),
        "video_caption": message(one_to_one, Message(videoMessage=VideoMessage(caption="a clip"))),
        "document_caption": message(one_to_one, Message(
            documentMessage=DocumentMessage(caption="the invoice", fileName="inv.pdf"))),
        "document_with_caption_wrapper": message(one_to_one, Message(
            documentWithCaptionMessage=FutureProofMessage(message=Message(
                documentMessage=DocumentMessage(caption="wrapped caption"))))),
        "image_no_caption": message(one_to_one, Message(imageMessage=ImageMessage(mimetype="image/png"))),
        "lid_sender_with_alt": message(
            MessageSource(Chat=LID, Sender=LID, SenderAlt=jid("15550002222", device=3),
                          IsFromMe=False, IsGroup=False),
            Message(conversation="via lid")),
        "lid_sender_without_alt": message(
            MessageSource(Chat=LID, Sender=LID, IsFromMe=False, IsGroup=False),
            Message(conversation="who am i")),
        "group": message(
            MessageSource(Chat=GROUP, Sender=jid("15550003333", device=12), IsFromMe=False,
                          IsGroup=True),
            Message(extendedTextMessage=ExtendedTextMessage(text="hi all")), push="Carol"),
        "group_lid_sender": message(
            MessageSource(Chat=GROUP, Sender=LID, SenderAlt=jid("15550004444"), IsFromMe=False,
                          IsGroup=True),
            Message(conversation="lid in group")),
        "from_me": message(
            MessageSource(Chat=PN, Sender=jid("15559990000", device=2), IsFromMe=True, IsGroup=False),
            Message(conversation="sent from my phone")),
        "protocol_revoke": message(one_to_one, Message(
            protocolMessage=ProtocolMessage(type=ProtocolMessage.REVOKE))),
        "reaction": message(one_to_one, Message(reactionMessage=ReactionMessage(text="+1"))),
        "key_distribution_only": message(
            MessageSource(Chat=GROUP, Sender=PN, IsFromMe=False, IsGroup=True),
            Message(senderKeyDistributionMessage=SenderKeyDistributionMessage(groupID="g"))),
        "status_broadcast": message(
            MessageSource(Chat=jid("status", "broadcast"), Sender=PN, IsFromMe=False, IsGroup=False),
            Message(conversation="my status")),
        "legacy_seconds_timestamp": message(one_to_one, Message(conversation="old glue"),
                                            ts=1_700_000_000),
        "receipt_read": ReceiptEv(MessageSource=MessageSource(Chat=PN, Sender=PN, IsFromMe=False,
                                                              IsGroup=False),
                                  MessageIDs=["3EB0AA", "3EB0BB"], Type=ReceiptEv.READ,
                                  Timestamp=1_700_000_001),
        "receipt_delivered": ReceiptEv(MessageSource=MessageSource(Chat=PN, Sender=PN),
                                       MessageIDs=["3EB0CC"], Type=ReceiptEv.DELIVERED,
                                       Timestamp=1_700_000_002),
        "receipt_untyped": ReceiptEv(MessageSource=MessageSource(Chat=PN, Sender=PN),
                                     MessageIDs=["3EB0DD"], Timestamp=1_700_000_003),
        # whatsmeow sends DMs to the LID, so receipts come back on the LID chat
        "receipt_lid_chat": ReceiptEv(MessageSource=MessageSource(Chat=LID, Sender=LID, SenderAlt=EMPTY,
                                                                  IsFromMe=False, IsGroup=False),
                                      MessageIDs=["3EB0EE"], Type=ReceiptEv.DELIVERED,
                                      Timestamp=1_700_000_004),
        "receipt_lid_chat_with_alt": ReceiptEv(
            MessageSource=MessageSource(Chat=LID, Sender=jid("204812345678901", "lid", device=2),
                                        SenderAlt=jid("15550007777", device=2), IsFromMe=False,
                                        IsGroup=False),
            MessageIDs=["3EB0FF"], Type=ReceiptEv.READ, Timestamp=1_700_000_005),
        "group_lid_sender_without_alt": message(
            MessageSource(Chat=GROUP, Sender=LID, IsFromMe=False, IsGroup=True),
            Message(conversation="lid in group, no alt")),
        "qr": QREv(Codes=["2@abc,def,ghi,jkl", "2@mno,pqr,stu,vwx"]),
        "pair_success": PairStatusEv(ID=jid("15550005555", device=0), Status=PairStatusEv.SUCCESS,
                                     Platform="android", BusinessName=""),
        "pair_error": PairStatusEv(ID=EMPTY, Status=PairStatusEv.ERROR, Error="key mismatch"),
        "connected": ConnectedEv(status=True),
        "disconnected": DisconnectedEv(status=True),
        "logged_out": LoggedOutEv(OnConnect=True, Reason=ConnectFailureReason.MAIN_DEVICE_GONE),
        "logged_out_no_reason": LoggedOutEv(OnConnect=False),
        "logged_out_401": LoggedOutEv(OnConnect=True, Reason=ConnectFailureReason.LOGGED_OUT),
        "logged_out_406": LoggedOutEv(OnConnect=True, Reason=ConnectFailureReason.UNKNOWN_LOGOUT),
        # neonize's encoder leaves Reason unset for 413-418; the raw <failure> node keeps it
        "connect_failure_raw_415": ConnectFailureEv(
            Message="", Raw=Node(Tag="failure", Attrs=[NodeAttrs(name="reason", text="415"),
                                                        NodeAttrs(name="location", text="frc")])),
        "connect_failure_raw_418_int": ConnectFailureEv(
            Raw=Node(Tag="failure", Attrs=[NodeAttrs(name="reason", integer=418)])),
        "connect_failure_raw_none": ConnectFailureEv(Raw=Node(Tag="failure")),
        "stream_replaced": StreamReplacedEv(),
        "temporary_ban": TemporaryBanEv(Code=TemporaryBanEv.SEND_TO_TOO_MANY_PEOPLE, Expire=3600),
        "connect_failure_503": ConnectFailureEv(Reason=ConnectFailureReason.SERVICE_UNAVAILABLE,
                                                Message="service unavailable"),
        "connect_failure_ua": ConnectFailureEv(Reason=ConnectFailureReason.BAD_USER_AGENT,
                                               Message="bad user agent"),
        "client_outdated": ClientOutdatedEv(),
        "keepalive_timeout": KeepAliveTimeoutEv(ErrorCount=3, LastSuccess=1_700_000_000),
        "keepalive_restored": KeepAliveRestoredEv(),
        "stream_error": StreamErrorEv(Code="516"),
        "presence_not_forwarded": PresenceEv(),
    }


IDENTITY_CASES = ("lid_sender_with_alt", "lid_sender_without_alt", "group_lid_sender_without_alt",
                  "receipt_lid_chat", "receipt_lid_chat_with_alt", "conversation", "receipt_read")


def store_lookup(lid_user: str) -> str:
    return LID_IN_STORE.get(lid_user, "")


def main() -> None:
    out: dict[str, object] = {}
    for name, ev in cases().items():
        direct = map_event(ev)
        parsed = map_event(type(ev).FromString(ev.SerializePartialToString()))
        if direct != parsed:
            raise SystemExit(f"{name}: mapping differs after a wire round trip: {direct} != {parsed}")
        out[name] = direct
        if name in IDENTITY_CASES:
            out[f"store:{name}"] = map_event(type(ev).FromString(ev.SerializePartialToString()),
                                             store_lookup)
    json.dump(out, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
