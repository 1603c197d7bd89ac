//! Services across hosts over real sockets: twins on different channel ids, instances,
//! attach and detach at run time, version mismatch, requests with stall timeouts and
//! refusals, and a hostile channel-0 peer.

use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use switchyard::proto::connection::Refusal;
use switchyard::proto::wire::control::{ChannelGrant, Control, ServiceOffer};
use switchyard::{
    AttachService, Channel, ChannelConfig, DetachService, DisconnectReason, GetInfo, PeerHandle,
    ReceivedRequest, RequestChannel, RequestError, Responder, SendFailure, Service, Switch,
    SwitchExt,
};
use switchyard_integration_tests::*;

/// A recording service called `name` (major version `major`) on MessagePack channels
/// `ids`: the service, its log and its channel handles.
fn recorded(name: &str, major: u32, ids: &[u8]) -> (Service, Shared, Vec<Channel<TestMsg>>) {
    let log = Shared::default();
    let (recorder, _gate) = Recorder::new(log.clone());
    let recorder = recorder.start();
    let mut svc = Service::new(name, major);
    svc.on_peer_up(&recorder).on_peer_down(&recorder);
    let chans = ids
        .iter()
        .map(|id| svc.channel(*id, ChannelConfig::new(1), &recorder))
        .collect();
    (svc, log, chans)
}

async fn start(services: Vec<Service>) -> (Addr<Switch>, switchyard::PeerAddr) {
    let mut builder = Switch::builder(test_config());
    for s in services {
        builder = builder.service(s);
    }
    let switch = builder.start().expect("switch starts");
    let info = switch.send(GetInfo).await.expect("switch answers");
    let addr = switchyard::PeerAddr::new(Some(info.id), info.listen_addr.expect("listening"));
    (switch, addr)
}

async fn dial(from: &Addr<Switch>, to: &switchyard::PeerAddr) -> PeerHandle {
    from.dial(to.clone()).await.expect("dial succeeds")
}

fn msg(seq: u64) -> TestMsg {
    TestMsg { seq, body: vec![] }
}

const WAIT: Duration = Duration::from_secs(5);

#[actix::test]
async fn instances_meet_only_their_twins_over_each_sides_channel_ids() {
    init_logs();
    let (a1, a1_log, a1_ch) = recorded("headers/chain-a", 1, &[0x10]);
    let (a2, _, a2_ch) = recorded("headers/chain-b", 1, &[0x11]);
    let (b2, b2_log, _) = recorded("headers/chain-b", 1, &[0x30]);
    let (b1, b1_log, b1_ch) = recorded("headers/chain-a", 1, &[0x31]);
    let (a, _) = start(vec![a1, a2]).await;
    let (_b, b_addr) = start(vec![b2, b1]).await;
    let to_b = dial(&a, &b_addr).await;
    // The dial answers once the services are negotiated: sending works at once.
    to_b.send(&a1_ch[0], &msg(1)).await.unwrap();
    to_b.send(&a2_ch[0], &msg(2)).await.unwrap();
    assert!(b1_log.wait_for(WAIT, |l| l.msgs.len() == 1).await);
    assert!(b2_log.wait_for(WAIT, |l| l.msgs.len() == 1).await);
    assert_eq!(
        b1_log.lock().msgs[0].0,
        0x31,
        "chain-a arrives on B's own id"
    );
    assert_eq!(b1_log.lock().msgs[0].2.seq, 1);
    assert_eq!(b2_log.lock().msgs[0].0, 0x30);
    assert_eq!(b2_log.lock().msgs[0].2.seq, 2);
    // And back, on B's ids.
    let to_a = b1_log.lock().peers[0].clone();
    to_a.send(&b1_ch[0], &msg(3)).await.unwrap();
    assert!(a1_log.wait_for(WAIT, |l| l.msgs.len() == 1).await);
    assert_eq!(a1_log.lock().msgs[0].0, 0x10);
}

#[actix::test]
async fn a_service_attached_at_run_time_meets_its_twin_and_detaching_tells_it() {
    init_logs();
    let (base_a, _, base_a_ch) = recorded("base", 1, &[0x10]);
    let (base_b, base_b_log, _) = recorded("base", 1, &[0x10]);
    let (a, _) = start(vec![base_a]).await;
    let (b, b_addr) = start(vec![base_b]).await;
    let to_b = dial(&a, &b_addr).await;
    // Attached on both nodes after they connected, on different ids.
    let (late_a, late_a_log, late_a_ch) = recorded("late", 1, &[0x20]);
    let (late_b, late_b_log, late_b_ch) = recorded("late", 1, &[0x40]);
    a.attach(late_a).await.unwrap();
    assert!(matches!(
        to_b.try_send(&late_a_ch[0], &msg(0)),
        Err(SendFailure::NotAccepted(0x20))
    ));
    b.send(AttachService(late_b)).await.unwrap().unwrap();
    assert!(late_a_log.wait_for(WAIT, |l| l.peers.len() == 1).await);
    assert!(late_b_log.wait_for(WAIT, |l| l.peers.len() == 1).await);
    to_b.send(&late_a_ch[0], &msg(7)).await.unwrap();
    assert!(late_b_log.wait_for(WAIT, |l| l.msgs.len() == 1).await);
    assert_eq!(late_b_log.lock().msgs[0].0, 0x40);
    // A name or channel already in use is refused.
    let (dup, _, _) = recorded("late", 1, &[0x50]);
    assert!(a.send(AttachService(dup)).await.unwrap().is_err());
    let (clash, _, _) = recorded("other", 1, &[0x10]);
    assert!(a.send(AttachService(clash)).await.unwrap().is_err());
    // Detached on A: both sides' services see it down, the connection goes on.
    assert!(a.detach("late").await);
    assert!(
        late_b_log
            .wait_for(WAIT, |l| l.events.iter().any(|e| matches!(
                e,
                Event::Down(_, DisconnectReason::ServiceDetached)
            )))
            .await
    );
    assert!(
        late_a_log
            .wait_for(WAIT, |l| l.events.iter().any(|e| matches!(
                e,
                Event::Down(_, DisconnectReason::ServiceDetached)
            )))
            .await
    );
    let to_a = late_b_log.lock().peers[0].clone();
    assert!(matches!(
        to_a.try_send(&late_b_ch[0], &msg(8)),
        Err(SendFailure::NotAccepted(0x40))
    ));
    to_b.send(&base_a_ch[0], &msg(9)).await.unwrap();
    assert!(base_b_log.wait_for(WAIT, |l| l.msgs.len() == 1).await);
    assert!(!to_b.is_closed());
    assert!(!a.send(DetachService("late".into())).await.unwrap(), "gone");
}

#[actix::test]
async fn another_major_version_never_comes_up_and_sends_fail_locally() {
    init_logs();
    let (chat_a, chat_a_log, chat_a_ch) = recorded("chat", 1, &[0x11]);
    let (chat_b, chat_b_log, _) = recorded("chat", 2, &[0x11]);
    let (base_a, _, base_a_ch) = recorded("base", 1, &[0x10]);
    let (base_b, base_b_log, _) = recorded("base", 1, &[0x10]);
    let (a, _) = start(vec![chat_a, base_a]).await;
    let (_b, b_addr) = start(vec![chat_b, base_b]).await;
    let to_b = dial(&a, &b_addr).await;
    assert!(matches!(
        to_b.try_send(&chat_a_ch[0], &msg(1)),
        Err(SendFailure::NotAccepted(0x11))
    ));
    to_b.send(&base_a_ch[0], &msg(2)).await.unwrap();
    assert!(base_b_log.wait_for(WAIT, |l| l.msgs.len() == 1).await);
    assert!(chat_a_log.lock().peers.is_empty() && chat_b_log.lock().peers.is_empty());
    assert!(!to_b.is_closed());
}

#[derive(Debug, Serialize, Deserialize)]
struct GetHeaders {
    from: u64,
    count: u64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Headers(Vec<u64>);

/// Answers `GetHeaders` at once, or keeps (or drops) the responders, as told.
struct Chain {
    answer: bool,
    drop_them: bool,
    held: Vec<Responder<Headers>>,
}

impl Actor for Chain {
    type Context = Context<Self>;
}

impl Handler<ReceivedRequest<GetHeaders, Headers>> for Chain {
    type Result = ();
    fn handle(&mut self, r: ReceivedRequest<GetHeaders, Headers>, _: &mut Context<Self>) {
        if self.answer {
            let h = (r.msg.from..r.msg.from + r.msg.count).collect();
            r.responder.respond(&Headers(h)).unwrap();
        } else if !self.drop_them {
            self.held.push(r.responder);
        }
    }
}

async fn headers_node(
    answer: bool,
    drop_them: bool,
    config: ChannelConfig,
) -> (
    Addr<Switch>,
    switchyard::PeerAddr,
    RequestChannel<GetHeaders, Headers>,
    Shared,
) {
    let chain = Chain {
        answer,
        drop_them,
        held: Vec::new(),
    }
    .start();
    let log = Shared::default();
    let (recorder, _gate) = Recorder::new(log.clone());
    let recorder = recorder.start();
    let mut svc = Service::new("headers", 1);
    svc.on_peer_up(&recorder).on_peer_down(&recorder);
    let ch = svc.request_channel(0x20, config, &chain);
    let (switch, addr) = start(vec![svc]).await;
    (switch, addr, ch, log)
}

#[actix::test]
async fn a_request_gets_its_response_and_a_silent_peer_is_closed_as_stalled() {
    init_logs();
    let (a, _, ch, a_log) = headers_node(true, false, ChannelConfig::new(5)).await;
    let (_b, b_addr, _, _) = headers_node(true, false, ChannelConfig::new(5)).await;
    let (_c, c_addr, _, _) = headers_node(false, false, ChannelConfig::new(5)).await;
    let to_b = dial(&a, &b_addr).await;
    let got = to_b
        .request(
            &ch,
            &GetHeaders { from: 10, count: 3 },
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert_eq!(got, Headers(vec![10, 11, 12]));
    // C accepts requests and never answers: stalled, and closed as such.
    let to_c = dial(&a, &c_addr).await;
    let err = to_c
        .request(
            &ch,
            &GetHeaders { from: 0, count: 1 },
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert_eq!(err, RequestError::Stalled);
    let c_id = to_c.id();
    assert!(
        a_log
            .wait_for(WAIT, |l| l.events.iter().any(|e| matches!(
                e,
                Event::Down(id, DisconnectReason::Stalled { channel: 0x20, .. }) if *id == c_id
            )))
            .await,
        "{:?}",
        a_log.lock().events
    );
    // The sync goes on with B.
    let got = to_b
        .request(
            &ch,
            &GetHeaders { from: 1, count: 1 },
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert_eq!(got, Headers(vec![1]));
}

#[actix::test]
async fn refusals_reach_the_caller_at_once_and_report_only_keeps_the_peer() {
    init_logs();
    let cfg = ChannelConfig::new(5).requests(8, 1).close_on_stall(false);
    let (a, _, ch, _) = headers_node(true, false, cfg).await;
    let (_holder, holder_addr, _, _) = headers_node(false, false, cfg).await;
    let (_dropper, dropper_addr, _, _) = headers_node(false, true, cfg).await;
    let to_holder = dial(&a, &holder_addr).await;
    let q = GetHeaders { from: 0, count: 1 };
    // The holder keeps the first request; the second is beyond its cap of one.
    let first = to_holder
        .try_request(&ch, &q, Duration::from_millis(300))
        .unwrap();
    let second = to_holder
        .request(&ch, &q, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(second, RequestError::Refused(Refusal::Busy));
    // Report-only channel: the stall reaches the caller, the peer stays.
    assert_eq!(first.await.unwrap_err(), RequestError::Stalled);
    assert!(!to_holder.is_closed());
    // A responder dropped unanswered refuses its request at once.
    let to_dropper = dial(&a, &dropper_addr).await;
    let err = to_dropper
        .request(&ch, &q, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(err, RequestError::Refused(Refusal::Dropped));
}

#[actix::test]
async fn a_hostile_channel_0_peer_is_closed_and_the_node_serves_the_others() {
    init_logs();
    let node = start_node(
        plaintext_config(),
        &[(1, ChannelConfig::new(1), Mode::PerMessage)],
    )
    .await;
    let honest = start_node(
        plaintext_config(),
        &[(1, ChannelConfig::new(1), Mode::PerMessage)],
    )
    .await;
    let to_node = connect(&honest, &node).await;
    // Offers of unknown services are answered, until they come too fast.
    let mut raw = RawPeer::connect(node.addr).await;
    raw.handshake("switchyard-local").await;
    let offer = |n: u32| {
        Control::ServiceConnect(ServiceOffer {
            name: format!("svc{n}"),
            major: 1,
            minor: 0,
            channels: vec![ChannelGrant { id: 9, credit: 1 }],
        })
    };
    for n in 0..400 {
        raw.send_control(&offer(n)).await;
    }
    match raw.closed(WAIT, true).await {
        Closed::Goodbye(DisconnectReason::ControlViolation(what)) => {
            assert!(what.contains("service messages"), "{what}")
        }
        other => panic!("{other:?}"),
    }
    // An offer with too many channels.
    let mut raw = RawPeer::connect(node.addr).await;
    raw.handshake("switchyard-local").await;
    raw.send_control(&Control::ServiceConnect(ServiceOffer {
        name: "wide".into(),
        major: 1,
        minor: 0,
        channels: (1..=40).map(|id| ChannelGrant { id, credit: 1 }).collect(),
    }))
    .await;
    assert!(matches!(
        raw.closed(WAIT, true).await,
        Closed::Goodbye(DisconnectReason::ControlViolation(_))
    ));
    // An answer to nothing.
    let mut raw = RawPeer::connect(node.addr).await;
    raw.handshake("switchyard-local").await;
    raw.send_control(&Control::ServiceDisconnect {
        name: "nobody".into(),
    })
    .await;
    assert!(matches!(
        raw.closed(WAIT, true).await,
        Closed::Goodbye(DisconnectReason::ControlViolation(_))
    ));
    // The honest peer was served throughout.
    to_node.send(&honest.ch(1), &msg(1)).await.unwrap();
    assert!(node.log.wait_for(WAIT, |l| l.msgs.len() == 1).await);
    assert!(!to_node.is_closed());
}
