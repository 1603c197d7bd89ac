//! The driver loop's `Drive` around a real core: the timer follows the core's
//! earliest deadline (the writer learns it too), and a timer that fired is armed
//! again for the next one.

use switchyard_proto::config::Config;
use switchyard_proto::connection::drive::Drive;
use switchyard_proto::connection::writer::Writer;

use crate::pair::*;

#[test]
fn the_timer_follows_the_core_s_deadline_and_fires_it() {
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    let mut writer = Writer::new();
    let mut drive = Drive::new();
    let deadline = s.core.poll_timeout().expect("a keepalive deadline");
    assert_eq!(drive.arm(&s.core, &mut writer), Some(deadline));
    assert_eq!(
        drive.arm(&s.core, &mut writer),
        None,
        "armed for it already"
    );
    drive.fire(&mut s.core, deadline);
    assert!(!drive.is_armed(), "a fired timer is not polled again");
    let next = s.core.poll_timeout().expect("the next deadline");
    assert!(next > deadline, "the core handled its deadline");
    assert_eq!(drive.arm(&s.core, &mut writer), Some(next));
    assert!(drive.is_armed());
}
