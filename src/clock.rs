//! One clock for the whole run: every event, ledger entry and probe sample is stamped as an offset from a single
//! monotonic anchor, and wall-clock time is derived from that same anchor so reports can be lined up with the
//! servers' own log stamps.

use std::time::{Duration, Instant, SystemTime};

/// The run's clock. Cheap to copy; every task stamps with the same anchor.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    anchor: Instant,
    anchor_wall: SystemTime,
}

/// A point on the run's clock: monotonic offset from the anchor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stamp(pub Duration);

impl Clock {
    pub fn start() -> Self {
        // Take both readings back to back; the pair defines the mapping mono -> wall for the whole run.
        let anchor = Instant::now();
        let anchor_wall = SystemTime::now();
        Clock {
            anchor,
            anchor_wall,
        }
    }

    /// A clock with a fixed wall anchor, for tests.
    pub fn with_wall_anchor(anchor_wall: SystemTime) -> Self {
        Clock {
            anchor: Instant::now(),
            anchor_wall,
        }
    }

    pub fn now(&self) -> Stamp {
        Stamp(self.anchor.elapsed())
    }

    pub fn stamp_of(&self, instant: Instant) -> Stamp {
        Stamp(instant.saturating_duration_since(self.anchor))
    }

    pub fn instant_of(&self, stamp: Stamp) -> Instant {
        self.anchor + stamp.0
    }

    pub fn wall(&self, stamp: Stamp) -> SystemTime {
        self.anchor_wall + stamp.0
    }

    /// RFC 3339 UTC with milliseconds, the format of every timestamp in the reports.
    pub fn rfc3339(&self, stamp: Stamp) -> String {
        rfc3339_millis(self.wall(stamp))
    }

    /// Maps a wall-clock time (e.g. parsed from a server log) onto the run's clock; None if before the anchor.
    pub fn stamp_of_wall(&self, wall: SystemTime) -> Option<Stamp> {
        wall.duration_since(self.anchor_wall).ok().map(Stamp)
    }
}

pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Stamp {
    pub fn secs_f64(self) -> f64 {
        self.0.as_secs_f64()
    }

    /// Seconds from `earlier` to `self`, negative if `self` is earlier.
    pub fn secs_since(self, earlier: Stamp) -> f64 {
        self.0.as_secs_f64() - earlier.0.as_secs_f64()
    }
}

/// Serialised as seconds on the run's monotonic clock (microsecond precision); wall times are rendered separately.
impl serde::Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((self.0.as_micros() as f64) / 1e6)
    }
}

impl std::ops::Add<Duration> for Stamp {
    type Output = Stamp;
    fn add(self, rhs: Duration) -> Stamp {
        Stamp(self.0 + rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_follows_the_monotonic_offset() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let clock = Clock::with_wall_anchor(wall);
        let s = Stamp(Duration::from_millis(1500));
        assert_eq!(clock.rfc3339(s), "2023-11-14T22:13:21.500Z");
        assert_eq!(
            clock.stamp_of_wall(wall + Duration::from_millis(1500)),
            Some(s)
        );
        assert_eq!(clock.stamp_of_wall(wall - Duration::from_millis(1)), None);
    }
}
