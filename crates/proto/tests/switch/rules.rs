//! One test per rule, each checking the reason it refuses with.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use switchyard_proto::switch::{
    Action, BanKey, BanList, Counts, Decision, DialRefusal, DialState, MemoryBans, PersistentId,
    Retry, Score, Severity, SwitchConfig, SwitchCore,
};
use switchyard_proto::{Config, DisconnectReason};

use super::{core, drain, id, ip, t0, LOCAL};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn handshakes_have_their_own_bound_and_do_not_take_inbound_slots() {
    let now = t0();
    let mut c = core(Config {
        max_inbound: 2,
        max_handshakes: 3,
        ..Config::default()
    });
    for conn in 1..=3 {
        c.handle_accept(now, conn, ip(conn as u8, 1)).unwrap();
    }
    let r = c.handle_accept(now, 4, ip(4, 1)).unwrap_err();
    assert_eq!(r.reason, DisconnectReason::MaxHandshakes);
    assert_eq!(c.handle_handshake(now, 1, id(1)), Decision::Admit);
    // A handshake slot freed: a fourth connection starts its handshake while two
    // others are still half-open.
    c.handle_accept(now, 5, ip(5, 1)).unwrap();
    assert_eq!(c.handle_handshake(now, 2, id(2)), Decision::Admit);
    assert_eq!(
        c.handle_handshake(now, 3, id(3)),
        Decision::Reject(DisconnectReason::MaxInbound)
    );
    assert_eq!(
        c.counts(),
        Counts {
            handshakes: 2,
            inbound: 2,
            outbound: 0,
            exempt: 0
        }
    );
    // Inbound full and no exempt peer configured: refused at accept.
    c.handle_closed(now, 3, DisconnectReason::MaxInbound);
    let r = c.handle_accept(now, 6, ip(6, 1)).unwrap_err();
    assert_eq!(r.reason, DisconnectReason::MaxInbound);
    assert!(r.goodbye);
}

#[test]
fn per_ip_and_per_subnet_limits_apply_to_loopback_unless_configured() {
    let now = t0();
    let limits = Config {
        max_per_ip: 2,
        max_per_subnet: 3,
        ..Config::default()
    };
    let mut c = core(limits.clone());
    c.handle_accept(now, 1, ip(1, 1)).unwrap();
    c.handle_accept(now, 2, ip(1, 1)).unwrap();
    assert_eq!(
        c.handle_accept(now, 3, ip(1, 1)).unwrap_err().reason,
        DisconnectReason::MaxPerIp
    );
    c.handle_accept(now, 4, ip(1, 2)).unwrap();
    assert_eq!(
        c.handle_accept(now, 5, ip(1, 3)).unwrap_err().reason,
        DisconnectReason::MaxPerSubnet
    );
    c.handle_accept(now, 6, ip(2, 1)).unwrap();
    c.handle_accept(now, 7, LO).unwrap();
    c.handle_accept(now, 8, LO).unwrap();
    assert_eq!(
        c.handle_accept(now, 9, LO).unwrap_err().reason,
        DisconnectReason::MaxPerIp,
        "loopback is limited by default"
    );
    let mut c = core(Config {
        limit_loopback: false,
        ..limits
    });
    for conn in 1..=10 {
        c.handle_accept(now, conn, LO).unwrap();
    }
    assert_eq!(c.per_ip(&LO), 10);
}

#[test]
fn handshake_rate_per_ip_and_subnet_closes_floods_cheaply() {
    let now = t0();
    let mut c = core(Config {
        handshake_rate_per_ip: 2,
        handshake_rate_per_subnet: 3,
        ..Config::default()
    });
    for conn in 1..=2 {
        c.handle_accept(now, conn, ip(1, 1)).unwrap();
        c.handle_closed(now, conn, DisconnectReason::ConnectionClosed);
    }
    let r = c.handle_accept(now, 3, ip(1, 1)).unwrap_err();
    assert_eq!(r.reason, DisconnectReason::RateLimited);
    assert!(!r.goodbye, "a flood gets no goodbye");
    c.handle_accept(now, 4, ip(1, 2)).unwrap();
    assert_eq!(
        c.handle_accept(now, 5, ip(1, 3)).unwrap_err().reason,
        DisconnectReason::RateLimited,
        "the subnet's rate is spent"
    );
    c.handle_accept(now, 6, ip(2, 1)).unwrap();
    c.handle_accept(now + Duration::from_millis(500), 7, ip(1, 1))
        .unwrap();
}

/// Both ends see the same two connections (in either order) and keep the same one.
#[test]
fn duplicate_tie_break_agrees_on_both_ends() {
    let now = t0();
    let (low, high) = (id(1), id(90));
    for low_first in [true, false] {
        let mk = |local| {
            SwitchCore::new(SwitchConfig::new(
                local,
                Config {
                    limit_loopback: false,
                    ..Config::default()
                },
            ))
        };
        // Connection A: dialed by `low`. Connection B: dialed by `high`.
        let mut at_low = mk(low);
        at_low.handle_connected(now, 10, LO, None, None).unwrap();
        at_low.handle_accept(now, 11, LO).unwrap();
        let mut at_high = mk(high);
        at_high.handle_accept(now, 20, LO).unwrap();
        at_high.handle_connected(now, 21, LO, None, None).unwrap();
        let (l1, l2, h1, h2) = if low_first {
            (
                at_low.handle_handshake(now, 10, high),
                at_low.handle_handshake(now, 11, high),
                at_high.handle_handshake(now, 20, low),
                at_high.handle_handshake(now, 21, low),
            )
        } else {
            (
                at_low.handle_handshake(now, 11, high),
                at_low.handle_handshake(now, 10, high),
                at_high.handle_handshake(now, 21, low),
                at_high.handle_handshake(now, 20, low),
            )
        };
        let dup = Decision::Reject(DisconnectReason::DuplicateConnection);
        if low_first {
            assert_eq!((l1, l2), (Decision::Admit, dup.clone()));
            assert_eq!((h1, h2), (Decision::Admit, dup));
        } else {
            assert_eq!((l1, l2), (Decision::Admit, Decision::Replace(11)));
            assert_eq!((h1, h2), (Decision::Admit, Decision::Replace(21)));
        }
        assert_eq!(at_low.conn_of(&high), Some(10), "A survives at low");
        assert_eq!(at_high.conn_of(&low), Some(20), "A survives at high");
        at_low.handle_closed(now, 11, DisconnectReason::DuplicateConnection);
        assert!(
            at_low.is_connected(&high),
            "the loser closing keeps the winner"
        );
        at_low.handle_closed(now, 10, DisconnectReason::ConnectionClosed);
        assert!(!at_low.is_connected(&high));
        assert_eq!(at_low.counts(), Counts::default());
    }
}

#[test]
fn persistent_peers_are_exempt_from_max_outbound_and_redialed_with_growing_backoff() {
    let now = t0();
    let limits = Config {
        max_outbound: 1,
        redial_backoff_min: Duration::from_millis(100),
        redial_backoff_max: Duration::from_millis(1000),
        ..Config::default()
    };
    let mut c = SwitchCore::new(SwitchConfig {
        persistent: vec![Some(id(7))],
        seed: 9,
        ..SwitchConfig::new(id(LOCAL), limits)
    });
    let p = PersistentId(0);
    assert_eq!(drain(&mut c), vec![Action::Dial(p)]);
    c.handle_connected(now, 1, ip(1, 1), None, None).unwrap();
    assert_eq!(
        c.handle_connected(now, 2, ip(1, 2), None, None),
        Err(DisconnectReason::MaxOutbound)
    );
    c.handle_connected(now, 3, ip(1, 7), Some(id(7)), Some(p))
        .unwrap();
    assert_eq!(c.handle_handshake(now, 3, id(7)), Decision::Admit);
    assert_eq!(c.counts().exempt, 1);
    assert_eq!(c.counts().outbound, 1);

    // It drops: redialed after delays that grow, up to the cap, never given up.
    let mut t = now;
    c.handle_closed(t, 3, DisconnectReason::PongTimeout);
    let mut delays = Vec::new();
    for _ in 0..8 {
        let at = c.poll_timeout().expect("a redial is scheduled");
        delays.push(at - t);
        t = at;
        c.handle_timeout(t);
        assert_eq!(drain(&mut c), vec![Action::Dial(p)]);
        c.handle_dial_failed(t, p, Retry::Later);
    }
    for d in &delays {
        assert!(*d <= Duration::from_millis(1000) && *d >= Duration::from_millis(50));
    }
    assert!(delays[0] <= Duration::from_millis(100));
    assert!(delays[5] >= Duration::from_millis(500), "{delays:?}");
    // A success resets the backoff.
    let at = c.poll_timeout().unwrap();
    c.handle_timeout(at);
    assert_eq!(drain(&mut c), vec![Action::Dial(p)]);
    c.handle_connected(at, 4, ip(1, 7), Some(id(7)), Some(p))
        .unwrap();
    assert_eq!(c.handle_handshake(at, 4, id(7)), Decision::Admit);
    c.handle_closed(at, 4, DisconnectReason::PongTimeout);
    assert!(c.poll_timeout().unwrap() - at <= Duration::from_millis(100));
}

#[test]
fn an_unconditional_peer_gets_in_when_inbound_is_full() {
    let now = t0();
    let mut c = SwitchCore::new(SwitchConfig {
        unconditional: vec![id(9)],
        ..SwitchConfig::new(
            id(LOCAL),
            Config {
                max_inbound: 1,
                ..Config::default()
            },
        )
    });
    c.handle_accept(now, 1, ip(1, 1)).unwrap();
    assert_eq!(c.handle_handshake(now, 1, id(1)), Decision::Admit);
    // Inbound is full, but the id is not known yet: a provisional handshake slot.
    c.handle_accept(now, 2, ip(2, 1)).unwrap();
    c.handle_accept(now, 3, ip(3, 1)).unwrap();
    assert_eq!(c.handle_handshake(now, 2, id(9)), Decision::Admit);
    assert_eq!(
        c.handle_handshake(now, 3, id(3)),
        Decision::Reject(DisconnectReason::MaxInbound)
    );
    assert_eq!(c.counts().inbound, 1);
    assert_eq!(c.counts().exempt, 1);
}

#[test]
fn a_peer_reported_past_the_threshold_is_banned_until_expiry() {
    let now = t0();
    let mut c = core(Config {
        ban_duration: Duration::from_secs(60),
        ..Config::default()
    });
    let bad = ip(1, 1);
    c.handle_accept(now, 1, bad).unwrap();
    assert_eq!(c.handle_handshake(now, 1, id(1)), Decision::Admit);
    c.handle_report(now, id(1), Severity::Moderate, "spam");
    assert!(drain(&mut c).is_empty(), "below the threshold");
    c.handle_report(now, id(1), Severity::Severe, "unsolicited answer");
    let actions = drain(&mut c);
    let until = now + Duration::from_secs(60);
    assert_eq!(
        actions,
        vec![
            Action::Banned {
                key: BanKey::Node(id(1)),
                until,
                reason: "unsolicited answer".into()
            },
            Action::Banned {
                key: BanKey::Ip(bad),
                until,
                reason: "unsolicited answer".into()
            },
            Action::Close {
                conn: 1,
                reason: DisconnectReason::Misbehavior("unsolicited answer".into())
            },
        ]
    );
    c.handle_closed(now, 1, DisconnectReason::Misbehavior("x".into()));
    let r = c.handle_accept(now, 2, bad).unwrap_err();
    assert_eq!(r.reason, DisconnectReason::Banned);
    assert_eq!(
        c.handle_dial(now, Some(id(1))),
        Err(DialRefusal::Banned(id(1)))
    );
    c.handle_accept(now, 3, ip(2, 1)).unwrap();
    assert_eq!(
        c.handle_handshake(now, 3, id(1)),
        Decision::Reject(DisconnectReason::Banned),
        "the id is banned from any address"
    );
    let later = until + Duration::from_millis(1);
    c.handle_timeout(later);
    assert!(c.bans().is_empty(), "expired bans are forgotten");
    c.handle_accept(later, 4, bad).unwrap();
    assert_eq!(c.handle_handshake(later, 4, id(1)), Decision::Admit);
}

/// A banned id is refused as soon as the transport proves it, in either direction,
/// before the handshake: the remote never sees our `Version`.
#[test]
fn a_banned_id_is_refused_once_the_transport_proves_it() {
    let now = t0();
    let mut c = core(Config {
        ban_duration: Duration::from_secs(60),
        ..Config::default()
    });
    c.handle_report(now, id(1), Severity::Severe, "hostile");
    let _ = drain(&mut c);
    assert!(c.is_banned(now, &BanKey::Node(id(1))));
    // Inbound: the IP is not banned (the id was reported without a connection).
    c.handle_accept(now, 1, ip(1, 1)).unwrap();
    assert_eq!(
        c.handle_authenticated(now, 1, id(1)),
        Err(DisconnectReason::Banned)
    );
    // Outbound to an address that named no id: known only now.
    c.handle_connected(now, 2, ip(1, 2), None, None).unwrap();
    assert_eq!(
        c.handle_authenticated(now, 2, id(1)),
        Err(DisconnectReason::Banned)
    );
    // Another id goes on to its handshake, and is admitted.
    c.handle_accept(now, 3, ip(1, 3)).unwrap();
    assert_eq!(c.handle_authenticated(now, 3, id(3)), Ok(()));
    assert_eq!(c.handle_handshake(now, 3, id(3)), Decision::Admit);
    // The refused ones close as banned: no points, slots freed.
    c.handle_closed(now, 1, DisconnectReason::Banned);
    c.handle_closed(now, 2, DisconnectReason::Banned);
    assert!(c.bans().score(&BanKey::Ip(ip(1, 1)), now).is_none());
    assert_eq!(
        c.counts(),
        Counts {
            handshakes: 0,
            inbound: 1,
            outbound: 0,
            exempt: 0
        }
    );
    // Once the ban ends, the id goes on.
    let later = now + Duration::from_secs(61);
    c.handle_timeout(later);
    c.handle_accept(later, 4, ip(1, 1)).unwrap();
    assert_eq!(c.handle_authenticated(later, 4, id(1)), Ok(()));
}

/// A connection whose IP was banned during its transport's handshake, an unknown
/// connection, and any connection once shutdown began are refused too.
#[test]
fn authentication_of_a_closing_or_unknown_connection_is_refused() {
    let now = t0();
    let mut c = core(Config::default());
    c.handle_accept(now, 1, ip(3, 1)).unwrap();
    assert_eq!(c.handle_handshake(now, 1, id(3)), Decision::Admit);
    c.handle_accept(now, 2, ip(3, 1)).unwrap();
    c.handle_accept(now, 3, ip(4, 1)).unwrap();
    // The admitted peer is banned, and with it its IP: the connection from that IP
    // still in its transport's handshake is closing, whatever id it proves.
    c.handle_report(now, id(3), Severity::Severe, "hostile");
    assert!(drain(&mut c).contains(&Action::Close {
        conn: 2,
        reason: DisconnectReason::Misbehavior("hostile".into())
    }));
    assert_eq!(
        c.handle_authenticated(now, 2, id(2)),
        Err(DisconnectReason::Banned)
    );
    assert_eq!(c.handle_authenticated(now, 3, id(4)), Ok(()));
    assert_eq!(
        c.handle_authenticated(now, 9, id(9)),
        Err(DisconnectReason::Shutdown),
        "unknown"
    );
    c.shutdown(now, Duration::from_secs(1));
    assert_eq!(
        c.handle_authenticated(now, 3, id(4)),
        Err(DisconnectReason::Shutdown)
    );
}

#[test]
fn scores_live_in_the_ban_list_so_points_from_before_a_restart_count() {
    let now = t0();
    let limits = Config {
        ban_duration: Duration::from_secs(60),
        ..Config::default()
    };
    let key = BanKey::Node(id(1));
    let mut first = SwitchCore::with_bans(
        SwitchConfig::new(id(LOCAL), limits.clone()),
        MemoryBans::default(),
    );
    first.handle_report(now, id(1), Severity::Major, "bad answer");
    assert_eq!(
        first.bans().score(&key, now),
        Some(Score {
            points: 50,
            until: now + Duration::from_secs(60)
        }),
        "the points are in the list, remembered for ban_duration"
    );
    assert!(!first.is_banned(now, &key));

    // A new core over the same list (what a peer store hands over at restart).
    let later = now + Duration::from_secs(30);
    let mut second = SwitchCore::with_bans(
        SwitchConfig::new(id(LOCAL), limits.clone()),
        first.bans().clone(),
    );
    second.handle_report(later, id(1), Severity::Major, "bad answer again");
    assert!(second.is_banned(later, &key), "50 + 50 reach the threshold");
    assert!(
        second.bans().score(&key, later).is_none(),
        "a ban clears the points"
    );

    // Points older than ban_duration are forgotten: one Major after them does not ban.
    let mut third = SwitchCore::with_bans(
        SwitchConfig::new(id(LOCAL), limits.clone()),
        first.bans().clone(),
    );
    let much_later = now + Duration::from_secs(60);
    third.handle_timeout(much_later);
    assert_eq!(third.bans().scored(), 0, "expired scores are forgotten");
    third.handle_report(much_later, id(1), Severity::Major, "bad answer again");
    assert!(!third.is_banned(much_later, &key));
}

#[test]
fn protocol_violations_count_towards_a_ban() {
    let now = t0();
    let mut c = core(Config::default());
    let bad = ip(1, 1);
    for conn in 1..=2 {
        c.handle_accept(now, conn, bad).unwrap();
        c.handle_closed(now, conn, DisconnectReason::UnknownChannel(9));
    }
    assert!(c.is_banned(now, &BanKey::Ip(bad)));
    c.handle_accept(now, 3, ip(1, 2)).unwrap();
    c.handle_closed(now, 3, DisconnectReason::PongTimeout);
    assert!(
        !c.is_banned(now, &BanKey::Ip(ip(1, 2))),
        "timeouts are not misbehaviour"
    );
}

#[test]
fn refusals_beyond_the_budget_close_cheaply_and_are_summarised() {
    let now = t0();
    let mut c = core(Config {
        max_handshakes: 1,
        max_refusing: 2,
        ..Config::default()
    });
    c.handle_accept(now, 1, ip(1, 1)).unwrap();
    let told: Vec<bool> = (2..=5)
        .map(|conn| {
            c.handle_accept(now, conn, ip(conn as u8, 1))
                .unwrap_err()
                .goodbye
        })
        .collect();
    assert_eq!(told, vec![true, true, false, false]);
    c.handle_refusal_done();
    assert!(c.handle_accept(now, 6, ip(6, 1)).unwrap_err().goodbye);
    assert!(drain(&mut c).is_empty());
    let at = c.poll_timeout().expect("a summary is due");
    c.handle_timeout(at);
    match drain(&mut c).as_slice() {
        [Action::RefusalSummary(s)] => {
            assert_eq!(s.by_reason, vec![(DisconnectReason::MaxHandshakes, 5)]);
            assert_eq!(s.without_goodbye, 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn shutdown_closes_everything_and_is_done_when_all_are_gone() {
    let now = t0();
    let mut c = core(Config::default());
    c.handle_accept(now, 1, ip(1, 1)).unwrap();
    c.handle_connected(now, 2, ip(2, 1), None, None).unwrap();
    c.shutdown(now, Duration::from_secs(3));
    let close = |conn| Action::Close {
        conn,
        reason: DisconnectReason::Shutdown,
    };
    assert_eq!(drain(&mut c), vec![close(1), close(2)]);
    assert_eq!(
        c.handle_accept(now, 3, ip(3, 1)).unwrap_err().reason,
        DisconnectReason::Shutdown
    );
    assert_eq!(c.handle_dial(now, None), Err(DialRefusal::ShuttingDown));
    assert_eq!(
        c.handle_handshake(now, 1, id(1)),
        Decision::Reject(DisconnectReason::Shutdown)
    );
    c.handle_closed(now, 1, DisconnectReason::Shutdown);
    assert!(drain(&mut c).is_empty());
    c.handle_closed(now, 2, DisconnectReason::Shutdown);
    assert_eq!(drain(&mut c), vec![Action::ShutdownDone { remaining: 0 }]);

    // A connection that never closes: done at the limit anyway.
    let mut c = core(Config::default());
    c.handle_accept(now, 1, ip(1, 1)).unwrap();
    c.shutdown(now, Duration::from_secs(3));
    let _ = drain(&mut c);
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(3)));
    c.handle_timeout(now + Duration::from_secs(3));
    assert_eq!(drain(&mut c), vec![Action::ShutdownDone { remaining: 1 }]);
}

#[test]
fn a_persistent_address_that_is_this_node_is_given_up() {
    let now = t0();
    let mut c = SwitchCore::new(SwitchConfig {
        persistent: vec![Some(id(LOCAL))],
        ..SwitchConfig::new(id(LOCAL), Config::default())
    });
    assert_eq!(drain(&mut c), vec![Action::Dial(PersistentId(0))]);
    assert_eq!(
        c.handle_dial(now, Some(id(LOCAL))),
        Err(DialRefusal::SelfDial)
    );
    c.handle_dial_failed(now, PersistentId(0), Retry::Never);
    assert_eq!(
        c.persistent(PersistentId(0)).unwrap().state,
        DialState::Disabled
    );
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn a_persistent_peer_dialing_in_gets_a_provisional_slot_and_takes_no_inbound_slot() {
    let now = t0();
    let mut c = SwitchCore::new(SwitchConfig {
        persistent: vec![Some(id(7))],
        ..SwitchConfig::new(
            id(LOCAL),
            Config {
                max_inbound: 1,
                ..Config::default()
            },
        )
    });
    let p = PersistentId(0);
    assert_eq!(drain(&mut c), vec![Action::Dial(p)]);
    c.handle_dial_failed(now, p, Retry::Later);
    c.handle_accept(now, 1, ip(1, 1)).unwrap();
    assert_eq!(c.handle_handshake(now, 1, id(1)), Decision::Admit);
    // Inbound is full; the persistent peer dials us before our redial.
    c.handle_accept(now, 2, ip(7, 1)).unwrap();
    assert_eq!(c.handle_handshake(now, 2, id(7)), Decision::Admit);
    assert_eq!(c.counts().inbound, 1);
    assert_eq!(c.counts().exempt, 1);
    assert_eq!(c.persistent(p).unwrap().state, DialState::Connected(2));
    // The redial that was due finds it connected: no dial.
    let due = now + Duration::from_secs(60);
    c.handle_timeout(due);
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), None);
    // It drops: redialed.
    c.handle_closed(due, 2, DisconnectReason::PongTimeout);
    let at = c.poll_timeout().expect("a redial");
    c.handle_timeout(at);
    assert_eq!(drain(&mut c), vec![Action::Dial(p)]);
}

#[test]
fn a_replaced_inbound_connection_frees_its_slot_for_the_winner() {
    let now = t0();
    let mut c = core(Config {
        max_inbound: 1,
        ..Config::default()
    });
    // The remote (id 90, above ours) dialed us: inbound, admitted.
    c.handle_accept(now, 1, ip(1, 1)).unwrap();
    assert_eq!(c.handle_handshake(now, 1, id(90)), Decision::Admit);
    // It dials again while inbound is full: refused at accept...
    assert_eq!(
        c.handle_accept(now, 2, ip(1, 1)).unwrap_err().reason,
        DisconnectReason::MaxInbound
    );
    // ...but our own dial to it is the one the tie-break keeps (we have the lower id).
    c.handle_connected(now, 3, ip(1, 1), Some(id(90)), None)
        .unwrap();
    assert_eq!(c.handle_handshake(now, 3, id(90)), Decision::Replace(1));
    c.handle_closed(now, 1, DisconnectReason::DuplicateConnection);
    assert_eq!(c.conn_of(&id(90)), Some(3));
    assert_eq!(c.counts().inbound, 0);
    assert_eq!(c.counts().outbound, 1);
}

#[test]
fn a_failed_dial_of_a_persistent_peer_already_connected_schedules_nothing() {
    let now = t0();
    let mut c = SwitchCore::new(SwitchConfig {
        persistent: vec![Some(id(7))],
        ..SwitchConfig::new(id(LOCAL), Config::default())
    });
    let p = PersistentId(0);
    assert_eq!(drain(&mut c), vec![Action::Dial(p)]);
    c.handle_accept(now, 1, ip(7, 1)).unwrap();
    assert_eq!(c.handle_handshake(now, 1, id(7)), Decision::Admit);
    assert_eq!(
        c.handle_dial(now, Some(id(7))),
        Err(DialRefusal::AlreadyConnected(id(7)))
    );
    c.handle_dial_failed(now, p, Retry::Later);
    assert_eq!(c.persistent(p).unwrap().state, DialState::Connected(1));
    assert_eq!(c.persistent(p).unwrap().backoff.attempts(), 0);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn ipv6_subnets_are_slash_48_by_default_and_configurable() {
    let now = t0();
    let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
    let limits = Config {
        max_per_ip: 1,
        max_per_subnet: 2,
        ..Config::default()
    };
    let mut c = core(limits.clone());
    c.handle_accept(now, 1, v6("2001:db8:1:1::1")).unwrap();
    c.handle_accept(now, 2, v6("2001:db8:1:2::1")).unwrap();
    assert_eq!(
        c.handle_accept(now, 3, v6("2001:db8:1:ffff::9"))
            .unwrap_err()
            .reason,
        DisconnectReason::MaxPerSubnet
    );
    c.handle_accept(now, 4, v6("2001:db8:2::1")).unwrap();
    let mut c = core(Config {
        subnet_prefix_v6: 64,
        ..limits
    });
    for (conn, a) in ["2001:db8:1:1::1", "2001:db8:1:2::1", "2001:db8:1:3::1"]
        .into_iter()
        .enumerate()
    {
        c.handle_accept(now, conn as u64, v6(a)).unwrap();
    }
}

// ----- eviction -----

/// Limits for the eviction tests: `max_inbound` slots, the given protections.
fn evicting(max_inbound: usize, netgroups: usize, rtt: usize) -> Config {
    Config {
        max_inbound,
        evict_protect_netgroups: netgroups,
        evict_protect_rtt: rtt,
        ..Config::default()
    }
}

/// Accepts `conn` from `from` and admits it as node `who`, `age` seconds after `now`.
fn admit(c: &mut SwitchCore, now: std::time::Instant, conn: u64, from: IpAddr, who: u8, age: u64) {
    let at = now + Duration::from_secs(age);
    c.handle_accept(at, conn, from).unwrap();
    assert_eq!(c.handle_handshake(at, conn, id(who)), Decision::Admit);
}

#[test]
fn eviction_takes_the_youngest_of_the_biggest_subnet_and_keeps_counts_right() {
    let now = t0();
    let mut c = core(evicting(6, 0, 0));
    // Three old peers (protected by age: half of six), then subnet 2 holds two of the
    // three young ones.
    admit(&mut c, now, 1, ip(1, 1), 1, 0);
    admit(&mut c, now, 2, ip(2, 1), 2, 1);
    admit(&mut c, now, 3, ip(3, 1), 3, 2);
    admit(&mut c, now, 4, ip(2, 2), 4, 3);
    admit(&mut c, now, 5, ip(2, 3), 5, 4);
    admit(&mut c, now, 6, ip(4, 1), 6, 5);
    let at = now + Duration::from_secs(10);
    // Inbound is full, but a peer could be evicted: the accept is not refused.
    c.handle_accept(at, 7, ip(5, 1)).unwrap();
    assert_eq!(c.handle_handshake(at, 7, id(7)), Decision::Evict(5));
    // The evicted peer is no longer admitted; its slot is held until it closes.
    assert!(!c.is_connected(&id(5)));
    assert_eq!(c.conn_of(&id(7)), Some(7));
    assert_eq!(c.peers(), 6);
    assert_eq!(c.counts().inbound, 7);
    assert_eq!(c.counts().handshakes, 0);
    c.handle_closed(at, 5, DisconnectReason::Evicted);
    assert_eq!(c.counts().inbound, 6);
    assert_eq!(c.connections(), 6);
    assert_eq!(c.per_ip(&ip(2, 3)), 0);
    assert!(
        !c.is_banned(at, &BanKey::Node(id(5))),
        "eviction is no misbehaviour"
    );
    // The next one: of the young half (4, 6, 7) each subnet has one peer, and the tie
    // goes against the youngest (only candidates count: 2, old, shares 4's subnet).
    c.handle_accept(at, 8, ip(6, 1)).unwrap();
    assert_eq!(c.handle_handshake(at, 8, id(8)), Decision::Evict(7));
}

#[test]
fn peers_with_low_round_trip_times_are_protected() {
    let now = t0();
    let mut c = core(evicting(3, 0, 1));
    admit(&mut c, now, 1, ip(1, 1), 1, 0);
    admit(&mut c, now, 2, ip(1, 2), 2, 1);
    admit(&mut c, now, 3, ip(1, 3), 3, 2);
    c.handle_rtt(now, 1, Duration::from_millis(50));
    c.handle_rtt(now, 2, Duration::from_millis(50));
    c.handle_rtt(now, 3, Duration::from_millis(80));
    // The lowest counts: 3 is the fastest now, and a slower sample later changes
    // nothing.
    c.handle_rtt(now, 3, Duration::from_millis(5));
    c.handle_rtt(now, 3, Duration::from_millis(500));
    let at = now + Duration::from_secs(10);
    c.handle_accept(at, 4, ip(2, 1)).unwrap();
    // 3 (youngest, fastest) is protected, 1 by age: 2 goes.
    assert_eq!(c.handle_handshake(at, 4, id(4)), Decision::Evict(2));
}

#[test]
fn long_lived_and_subnet_diverse_peers_are_protected() {
    let now = t0();
    // Without subnet protection, the youngest of two single-peer subnets goes.
    let mut c = core(evicting(4, 0, 0));
    admit(&mut c, now, 1, ip(1, 1), 1, 0);
    admit(&mut c, now, 2, ip(1, 2), 2, 1);
    admit(&mut c, now, 3, ip(2, 1), 3, 2);
    admit(&mut c, now, 4, ip(3, 1), 4, 3);
    let at = now + Duration::from_secs(10);
    c.handle_accept(at, 5, ip(4, 1)).unwrap();
    assert_eq!(c.handle_handshake(at, 5, id(5)), Decision::Evict(4));
    // With it (three subnets, all protected), the peer sharing its subnet goes.
    let mut c = core(evicting(4, 3, 0));
    admit(&mut c, now, 1, ip(1, 1), 1, 0);
    admit(&mut c, now, 2, ip(1, 2), 2, 1);
    admit(&mut c, now, 3, ip(2, 1), 3, 2);
    admit(&mut c, now, 4, ip(3, 1), 4, 3);
    c.handle_accept(at, 5, ip(4, 1)).unwrap();
    assert_eq!(c.handle_handshake(at, 5, id(5)), Decision::Evict(2));
    // The oldest peer outlives every newcomer.
    let mut c = core(evicting(2, 0, 0));
    admit(&mut c, now, 1, ip(1, 1), 1, 0);
    admit(&mut c, now, 2, ip(1, 2), 2, 1);
    for conn in 3..10 {
        let at = now + Duration::from_secs(conn);
        c.handle_accept(at, conn, ip(1, conn as u8)).unwrap();
        assert_eq!(
            c.handle_handshake(at, conn, id(conn as u8)),
            Decision::Evict(conn - 1)
        );
        c.handle_closed(at, conn - 1, DisconnectReason::Evicted);
        assert_eq!(c.counts().inbound, 2);
    }
    assert!(c.is_connected(&id(1)));
}

#[test]
fn exempt_and_outbound_peers_are_never_evicted() {
    let now = t0();
    let mut c = SwitchCore::new(SwitchConfig {
        unconditional: vec![id(9)],
        ..SwitchConfig::new(id(LOCAL), evicting(1, 0, 0))
    });
    c.handle_connected(now, 1, ip(8, 1), None, None).unwrap();
    assert_eq!(c.handle_handshake(now, 1, id(8)), Decision::Admit);
    admit(&mut c, now, 2, ip(9, 1), 9, 0);
    admit(&mut c, now, 3, ip(1, 1), 1, 1);
    for conn in 4..7 {
        let at = now + Duration::from_secs(conn);
        // Only the one ordinary inbound peer is ever a candidate.
        c.handle_accept(at, conn, ip(conn as u8, 1)).unwrap();
        assert_eq!(
            c.handle_handshake(at, conn, id(conn as u8)),
            Decision::Evict(conn - 1)
        );
        c.handle_closed(at, conn - 1, DisconnectReason::Evicted);
    }
    assert_eq!(
        c.counts(),
        Counts {
            handshakes: 0,
            inbound: 1,
            outbound: 1,
            exempt: 1
        }
    );
    assert!(c.is_connected(&id(8)) && c.is_connected(&id(9)));
}

#[test]
fn no_candidate_left_means_max_inbound() {
    let now = t0();
    // An exempt peer is configured, so inbound admission waits for the handshake;
    // the one inbound peer is protected by its round-trip time (even unmeasured).
    let mut c = SwitchCore::new(SwitchConfig {
        unconditional: vec![id(9)],
        ..SwitchConfig::new(id(LOCAL), evicting(1, 0, 1))
    });
    admit(&mut c, now, 1, ip(1, 1), 1, 0);
    c.handle_accept(now, 2, ip(2, 1)).unwrap();
    assert_eq!(
        c.handle_handshake(now, 2, id(2)),
        Decision::Reject(DisconnectReason::MaxInbound)
    );
    c.handle_closed(now, 2, DisconnectReason::MaxInbound);
    assert_eq!(c.counts().inbound, 1);
    assert_eq!(c.connections(), 1);
    // No exempt peer: refused at accept already, since nobody could be evicted.
    let mut c = core(evicting(1, 1, 0));
    admit(&mut c, now, 1, ip(1, 1), 1, 0);
    assert_eq!(
        c.handle_accept(now, 2, ip(2, 1)).unwrap_err().reason,
        DisconnectReason::MaxInbound
    );
}

#[test]
fn eviction_can_be_turned_off() {
    let now = t0();
    let mut c = core(Config {
        evict_inbound: false,
        ..evicting(1, 0, 0)
    });
    admit(&mut c, now, 1, ip(1, 1), 1, 0);
    assert_eq!(
        c.handle_accept(now, 2, ip(2, 1)).unwrap_err().reason,
        DisconnectReason::MaxInbound
    );
}
