//! Replays every input of the fuzz corpus (`fuzz/corpus/<target>`) and every crash
//! kept as a regression (`fuzz/regressions/<target>`) through the same harness the
//! cargo-fuzz target runs, on stable Rust, as part of `make test`.

use std::path::Path;

use switchyard_proto::fuzz;

fn replay(target: &str, harness: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut count = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable corpus dir").path();
            let data = std::fs::read(&path).expect("readable corpus file");
            let ok = std::panic::catch_unwind(|| harness(&data));
            assert!(ok.is_ok(), "{} fails the {target} harness", path.display());
            count += 1;
        }
    }
    count
}

#[test]
fn the_packet_corpus_replays() {
    assert!(
        replay("packet", fuzz::packet_decoder) > 0,
        "no corpus checked in"
    );
}

#[test]
fn the_control_corpus_replays() {
    assert!(
        replay("control", fuzz::control_decoder) > 0,
        "no corpus checked in"
    );
}

/// The peer-core harness from the current instant (it takes time as an input).
fn peer_core_now(data: &[u8]) {
    #[allow(clippy::disallowed_methods)]
    let start = std::time::Instant::now();
    fuzz::peer_core(start, data);
}

#[test]
fn the_peer_core_corpus_replays() {
    assert!(
        replay("peer_core", peer_core_now) > 0,
        "no corpus checked in"
    );
}

#[test]
fn the_secure_corpus_replays() {
    assert!(
        replay("secure", fuzz::secure_handshake) > 0,
        "no corpus checked in"
    );
}
