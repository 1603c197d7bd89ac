//! Introspection (local and over channel 0) and Prometheus metrics, after known
//! traffic between two nodes on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard::{
    ChannelConfig, DisconnectReason, GetInfo, Introspect, IntrospectFailure, IntrospectPeer,
    NodeConfig, NodeId,
};
use switchyard_integration_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn channels() -> Vec<(u8, ChannelConfig, Mode)> {
    vec![(1, ChannelConfig::new(1), Mode::PerMessage)]
}

fn msgs() -> Vec<TestMsg> {
    (0..10u64)
        .map(|seq| TestMsg {
            seq,
            body: vec![seq as u8; 100],
        })
        .collect()
}

/// Sends the ten messages from `to` and waits until `on` received them all.
async fn traffic(from: &Node, to: &Node, peer: &switchyard::PeerHandle) -> u64 {
    let mut bytes = 0;
    for m in msgs() {
        bytes += encode(&m).len() as u64;
        peer.send(&from.ch(1), &m).await.expect("queued");
    }
    assert!(
        to.log
            .wait_for(Duration::from_secs(10), |l| l.msgs.len() == 10)
            .await
    );
    bytes
}

#[actix::test]
async fn local_and_remote_introspection_show_services_peers_and_counters() {
    init_logs();
    let a = start_node(test_config(), &channels()).await;
    let b = start_node(test_config(), &channels()).await;
    let to_b = connect(&a, &b).await;
    let bytes = traffic(&a, &b, &to_b).await;

    let local = a.switch.send(Introspect).await.expect("mailbox");
    assert_eq!(local.node_id, a.id.to_string());
    assert_eq!(local.network, "switchyard-local");
    assert_eq!(local.listen_addr, Some(a.addr.to_string()));
    assert_eq!(local.services.len(), 1);
    assert_eq!(local.services[0].name, SERVICE);
    assert_eq!(local.services[0].channels[0].id, 1);
    assert_eq!((local.peers_total, local.peers.len()), (1, 1));
    let peer = &local.peers[0];
    assert_eq!(peer.node_id, b.id.to_string());
    assert_eq!(peer.services, vec![SERVICE.to_owned()]);
    let ch = peer.channels.iter().find(|c| c.id == 1).expect("channel 1");
    assert_eq!((ch.sent_messages, ch.sent_bytes), (10, bytes));

    // B's view, asked over channel 0: A is its peer, and A's messages arrived.
    let remote = a
        .switch
        .send(IntrospectPeer {
            id: b.id,
            timeout: Duration::from_secs(5),
        })
        .await
        .expect("mailbox")
        .expect("answered");
    assert_eq!(remote.node_id, b.id.to_string());
    assert_eq!(remote.peers.len(), 1);
    assert_eq!(remote.peers[0].node_id, a.id.to_string());
    let ch = remote.peers[0]
        .channels
        .iter()
        .find(|c| c.id == 1)
        .expect("channel 1");
    assert_eq!((ch.recv_messages, ch.recv_bytes), (10, bytes));
    // The JSON has the same fields.
    let json = serde_json::to_value(&remote).expect("serializable");
    assert_eq!(json["peers"][0]["channels"][0]["recv_messages"], 10);

    let nobody = a
        .switch
        .send(IntrospectPeer {
            id: NodeId([9; 20]),
            timeout: Duration::from_secs(1),
        })
        .await
        .expect("mailbox");
    assert_eq!(
        nobody,
        Err(IntrospectFailure::NotConnected(NodeId([9; 20])))
    );
}

/// `GET path` over a fresh connection; returns the status line and the body.
async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("a response");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// The value of the sample `name` (with its labels) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next())
        .and_then(|v| v.parse().ok())
}

#[actix::test]
async fn metrics_count_connections_traffic_and_disconnects() {
    init_logs();
    let config = NodeConfig {
        metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..test_config()
    };
    let a = start_node(config, &channels()).await;
    let b = start_node(test_config(), &channels()).await;
    let metrics = a
        .switch
        .send(GetInfo)
        .await
        .expect("mailbox")
        .metrics_addr
        .expect("metrics served");
    let to_b = connect(&a, &b).await;
    let bytes = traffic(&a, &b, &to_b).await;

    let (status, text) = get(metrics, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let out = r#"{channel="1",direction="out"}"#;
    assert_eq!(
        sample(&text, &format!("switchyard_channel_messages_total{out}")),
        Some(10.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("switchyard_channel_bytes_total{out}")),
        Some(bytes as f64)
    );
    assert_eq!(
        sample(&text, r#"switchyard_connections{direction="outbound"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "switchyard_handshake_seconds_count"),
        Some(1.0)
    );
    assert!(text.contains("switchyard_rtt_seconds"));
    assert!(text.contains("switchyard_send_queue_messages"));

    // The connection closes: counted by reason, and the traffic stays counted.
    to_b.disconnect(DisconnectReason::Application("done".into()));
    assert!(
        a.log
            .wait_for(Duration::from_secs(5), |l| l
                .events
                .iter()
                .any(|e| matches!(e, Event::Down(..))))
            .await
    );
    let gone = async {
        loop {
            let (_, text) = get(metrics, "/metrics").await;
            if sample(
                &text,
                r#"switchyard_disconnects_total{reason="application"}"#,
            ) == Some(1.0)
            {
                return text;
            }
            // The Switch hears of the close after the service: poll the scrape.
            tokio::task::yield_now().await;
        }
    };
    let text = tokio::time::timeout(Duration::from_secs(5), gone)
        .await
        .expect("disconnect counted");
    assert_eq!(
        sample(&text, &format!("switchyard_channel_messages_total{out}")),
        Some(10.0)
    );
    assert_eq!(
        sample(&text, r#"switchyard_connections{direction="outbound"}"#),
        Some(0.0)
    );

    let (status, _) = get(metrics, "/elsewhere").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}
