//! Event time. Events carry UTC milliseconds since the Unix epoch; inputs
//! give either an RFC 3339 string or an integer count of epoch milliseconds.

use chrono::{DateTime, SecondsFormat, Utc};

/// Smallest accepted event time: 1970-01-01T00:00:00Z.
pub const MIN_TS_MS: i64 = 0;
/// Largest accepted event time: 9999-12-31T23:59:59.999Z. Anything later is
/// a corrupt record, not a real API call.
pub const MAX_TS_MS: i64 = 253_402_300_799_999;

/// Parses an RFC 3339 timestamp (`2026-11-27T21:00:00.123Z`, any offset)
/// into UTC epoch milliseconds. Sub-millisecond digits are truncated.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let ts = DateTime::parse_from_rfc3339(text).ok()?.timestamp_millis();
    in_range(ts)
}

/// Accepts an epoch-millisecond count if it lies in the supported range.
pub fn in_range(ts_ms: i64) -> Option<i64> {
    (MIN_TS_MS..=MAX_TS_MS).contains(&ts_ms).then_some(ts_ms)
}

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision.
pub fn format_rfc3339_ms(ts_ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ts_ms) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        // Unreachable for events (the decoder enforces the range); kept total.
        None => ts_ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_to_utc() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_rfc3339_ms("1970-01-01T01:00:01.5+01:00"), Some(1500));
        assert_eq!(
            parse_rfc3339_ms("2026-11-27T21:00:00.123456Z"),
            Some(1_795_813_200_123)
        );
    }

    #[test]
    fn rejects_non_rfc3339_and_out_of_range() {
        for bad in [
            "",
            "yesterday",
            "2026-11-27",
            "2026-11-27 21:00:00",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad:?}");
        }
        assert_eq!(in_range(-1), None);
        assert_eq!(in_range(MAX_TS_MS + 1), None);
    }

    #[test]
    fn formats_with_millis() {
        assert_eq!(
            format_rfc3339_ms(1_795_813_200_123),
            "2026-11-27T21:00:00.123Z"
        );
        assert_eq!(
            parse_rfc3339_ms(&format_rfc3339_ms(MAX_TS_MS)),
            Some(MAX_TS_MS)
        );
    }
}
