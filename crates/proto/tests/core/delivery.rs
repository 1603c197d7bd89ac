//! Delivery in rounds (`PeerCore::handout` / `handle_handout`): payloads in batches
//! where the service takes them and message by message otherwise, one hand-over at a
//! time, credit back for what the mailbox took, and a message the service cannot read
//! closes the connection.

use std::collections::VecDeque;

use bytes::Bytes;
use switchyard_proto::config::Config;
use switchyard_proto::connection::delivery::{AfterHandout, Delivered, Handout};
use switchyard_proto::connection::message_cost;
use switchyard_proto::wire::codec::{Msg, MsgKind, Packet};
use switchyard_proto::{DisconnectReason, Message};

use crate::pair::*;

/// A connected core whose services take nothing on their own.
fn solo() -> Solo {
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    s.consuming = false;
    s
}

fn request(channel: u8, id: u32, payload: &'static [u8]) -> Packet {
    Packet::Msg(Msg {
        channel,
        eof: true,
        kind: MsgKind::Request(id),
        total: None,
        payload: Bytes::from_static(payload),
    })
}

fn consumed(s: &Solo) -> u64 {
    s.core.channel_info(BULK).unwrap().recv.consumed
}

/// The payload taker a runtime offers (any value; it comes back with the payloads).
const TAKER: &str = "batches";

type Report = Result<Delivered<&'static str>, DisconnectReason>;

#[test]
fn payloads_go_in_batches_and_a_request_goes_as_a_message() {
    let mut s = solo();
    for i in 0..3u8 {
        s.feed_msg(BULK, &[i; 10]);
    }
    s.feed_packet(request(BULK, 7, b"question"));
    s.feed_msg(BULK, b"after");
    let mut msgs = VecDeque::new();
    let Handout::Payloads { to, payloads, cost } = s.core.handout(BULK, 2, Some(TAKER), &mut msgs)
    else {
        panic!("payloads first");
    };
    assert_eq!((to, payloads.len(), cost), (TAKER, 2, 2 * message_cost(10)));
    assert!(msgs.is_empty());
    let now = s.now;
    let all: Report = Ok(Delivered::All);
    assert!(matches!(
        s.core.handle_handout(now, BULK, &mut msgs, all),
        AfterHandout::More
    ));
    assert_eq!(consumed(&s), 2 * message_cost(10));
    // The third payload, then the request stops the batch.
    let handout = s.core.handout(BULK, 2, Some(TAKER), &mut msgs);
    assert!(matches!(handout, Handout::Payloads { ref payloads, .. } if payloads.len() == 1));
    let _ = s
        .core
        .handle_handout(now, BULK, &mut msgs, Ok(Delivered::<()>::All));
    // The request goes as a message, and the message after it with it.
    assert!(matches!(
        s.core.handout(BULK, 2, Some(TAKER), &mut msgs),
        Handout::Messages
    ));
    let kinds: Vec<MsgKind> = msgs.iter().map(|m| m.kind).collect();
    assert_eq!(kinds, [MsgKind::Request(7), MsgKind::Plain]);
    msgs.clear();
    let _ = s
        .core
        .handle_handout(now, BULK, &mut msgs, Ok(Delivered::<()>::All));
    assert!(matches!(
        s.core.handout(BULK, 2, Some(TAKER), &mut msgs),
        Handout::Nothing
    ));
    assert!(!s.core.has_undelivered());
    assert!(s.closed().is_none());
}

#[test]
fn without_a_payload_taker_everything_goes_as_messages() {
    let mut s = solo();
    for i in 0..3u8 {
        s.feed_msg(BULK, &[i; 10]);
    }
    let mut msgs = VecDeque::new();
    assert!(matches!(
        s.core.handout(BULK, 2, None::<()>, &mut msgs),
        Handout::Messages
    ));
    assert_eq!(msgs.len(), 2, "at most a batch");
    assert!(matches!(
        s.core.handout(OTHER, 2, None::<()>, &mut VecDeque::new()),
        Handout::Nothing
    ));
}

/// A full mailbox: what it took has its credit back, the message in hand waits with
/// its credit, the rest go back in order, and the channel hands out nothing more
/// until the hand-over is taken. The other channels go on.
#[test]
fn a_full_mailbox_pauses_only_its_channel_until_the_hand_over_is_taken() {
    let mut s = solo();
    for i in 0..4u8 {
        s.feed_msg(BULK, &[i; 100]);
    }
    s.feed_msg(OTHER, b"other");
    let mut msgs = VecDeque::new();
    assert!(matches!(
        s.core.handout(BULK, 8, None::<()>, &mut msgs),
        Handout::Messages
    ));
    let batch: Vec<Message> = msgs.iter().cloned().collect();
    // The service took message 0; message 1 waits in hand; 2 and 3 were not offered.
    msgs.drain(..2);
    let now = s.now;
    let full: Report = Ok(Delivered::Full {
        cost: batch[1].cost(),
        wait: "room",
    });
    assert!(matches!(
        s.core.handle_handout(now, BULK, &mut msgs, full),
        AfterHandout::Wait("room")
    ));
    assert!(msgs.is_empty(), "the unsent went back");
    assert_eq!(consumed(&s), batch[0].cost());
    assert!(matches!(
        s.core.handout(BULK, 8, None::<()>, &mut msgs),
        Handout::Nothing
    ));
    assert!(s.core.has_undelivered());
    let mut other = VecDeque::new();
    assert!(matches!(
        s.core.handout(OTHER, 8, None::<()>, &mut other),
        Handout::Messages
    ));
    s.core.handle_handover(now, BULK);
    assert_eq!(consumed(&s), batch[0].cost() + batch[1].cost());
    assert!(matches!(
        s.core.handout(BULK, 8, None::<()>, &mut msgs),
        Handout::Messages
    ));
    assert_eq!(Vec::from(msgs), batch[2..].to_vec());
}

#[test]
fn a_message_the_service_cannot_read_closes_the_connection() {
    let mut s = solo();
    s.feed_msg(BULK, b"garbage");
    let mut msgs = VecDeque::new();
    let _ = s.core.handout(BULK, 8, None::<()>, &mut msgs);
    let reason = DisconnectReason::Undecodable {
        channel: BULK,
        error: "bad".into(),
    };
    let now = s.now;
    let failed: Report = Err(reason.clone());
    assert!(matches!(
        s.core.handle_handout(now, BULK, &mut msgs, failed),
        AfterHandout::Stop
    ));
    s.drain();
    assert_eq!(s.reason(), Some(reason));
}
