//! The time the cabinet judges expiry by: the server's clock, carried forward.
//!
//! Pickup windows, sealed-template expiry and courier passes are all set by the server's
//! clock. A cabinet whose own clock is hours off (a dead RTC battery, no NTP on a
//! mobile link) would otherwise open expired parcels for expired passes (clock behind)
//! or refuse valid ones (clock ahead). So every `down` envelope's timestamp is taken as
//! the server's time at sending, and carried forward with the monotonic clock, which no
//! wall-clock jump moves:
//!
//! ```text
//!   now = last server timestamp + monotonic time since it arrived   (once one arrived)
//!   now = the cabinet's own clock                                   (until then)
//! ```
//!
//! Network delay makes the estimate lag by that delay (milliseconds to seconds), which
//! errs on the side of the server's deadlines. The server sends the cabinet its desired
//! state right after every hello, so the estimate is fresh after each (re)connect; after
//! a restart the cabinet uses its own clock until that first message.

use std::time::Instant;

use chrono::{DateTime, Utc};

/// The last server timestamp and when (monotonically) it arrived.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerClock {
    last: Option<(DateTime<Utc>, Instant)>,
}

impl ServerClock {
    /// A `down` envelope stamped `server_ts` arrived now. Older stamps (a message that
    /// waited in the broker) never move the estimate back.
    pub fn observe(&mut self, server_ts: DateTime<Utc>) {
        self.observe_at(server_ts, Instant::now());
    }

    fn observe_at(&mut self, server_ts: DateTime<Utc>, arrived: Instant) {
        if self.estimate_at(arrived).is_none_or(|now| server_ts > now) {
            self.last = Some((server_ts, arrived));
        }
    }

    fn estimate_at(&self, at: Instant) -> Option<DateTime<Utc>> {
        let (ts, arrived) = self.last?;
        let elapsed =
            chrono::Duration::from_std(at.saturating_duration_since(arrived)).unwrap_or(chrono::Duration::MAX);
        ts.checked_add_signed(elapsed)
    }

    /// The time to judge expiry by: the server's, if any message came, else `local`.
    pub fn now(&self, local: DateTime<Utc>) -> DateTime<Utc> {
        self.estimate_at(Instant::now()).unwrap_or(local)
    }

    /// How far the cabinet's own clock is from the server's (positive: ahead), if known.
    pub fn skew(&self, local: DateTime<Utc>) -> Option<chrono::Duration> {
        self.estimate_at(Instant::now()).map(|server| local - server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_servers_time_is_carried_forward_whatever_the_local_clock_says() {
        let mut c = ServerClock::default();
        let local = Utc::now();
        assert_eq!(c.now(local), local, "the cabinet's own clock until the server has spoken");
        let t0 = Instant::now();
        let server = local - chrono::Duration::hours(6);
        c.observe_at(server, t0);
        let later = c.estimate_at(t0 + Duration::from_secs(90)).unwrap();
        assert_eq!(later, server + chrono::Duration::seconds(90));
        // A message that waited in the broker carries an older stamp: no step back.
        c.observe_at(server - chrono::Duration::minutes(5), t0 + Duration::from_secs(90));
        assert_eq!(c.estimate_at(t0 + Duration::from_secs(90)).unwrap(), later);
        // A newer stamp moves it forward.
        c.observe_at(server + chrono::Duration::minutes(10), t0 + Duration::from_secs(90));
        assert_eq!(c.estimate_at(t0 + Duration::from_secs(90)).unwrap(), server + chrono::Duration::minutes(10));
        let skew = c.skew(local).unwrap();
        assert!(skew > chrono::Duration::hours(5) && skew < chrono::Duration::hours(6), "{skew}");
    }
}
