//! The VRRPv3 timers (RFC 5798 section 6.1), worked out independently of
//! lbfo's state machine so tests and benchmarks can hold it to them.

use std::time::Duration;

/// Skew_Time = ((256 - Priority) × Master_Adver_Interval) / 256.
pub fn skew_time(advert: Duration, priority: u8) -> Duration {
    advert * (256 - u32::from(priority)) / 256
}

/// Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time: how long a
/// Backup at `priority` waits after the last advertisement.
pub fn master_down_interval(advert: Duration, priority: u8) -> Duration {
    3 * advert + skew_time(advert, priority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_for_one_second_adverts_at_priority_100() {
        let advert = Duration::from_secs(1);
        assert_eq!(skew_time(advert, 100), Duration::from_micros(609_375));
        assert_eq!(
            master_down_interval(advert, 100),
            Duration::from_micros(3_609_375)
        );
    }
}
