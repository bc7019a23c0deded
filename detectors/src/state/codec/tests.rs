use proptest::prelude::*;

use super::*;

/// Bytes after the version byte in format 1.
fn v1_len() -> usize {
    encode(&TokenState::default()).len() - 1
}

#[test]
fn a_state_takes_this_many_bytes() {
    // The changelog's bytes per token, before the key and Kafka's framing:
    // the version byte, 3 × u32, volume 94, geo 86, novelty 78.
    assert_eq!(v1_len() + 1, 271);
}

proptest! {
    /// Every field is written and read back exactly: any record of the
    /// right length (every bit pattern is a state, NaNs included) comes
    /// back byte for byte.
    #[test]
    fn every_v1_record_round_trips_byte_for_byte(body in prop::collection::vec(any::<u8>(), v1_len())) {
        let mut record = vec![1u8];
        record.extend(&body);
        let state = decode(&record).unwrap();
        prop_assert_eq!(encode(&state), record);
    }
}

#[test]
fn bad_records_are_refused_with_the_reason() {
    let good = encode(&TokenState::default());
    assert_eq!(decode(&[]), Err(CodecError::Empty));
    assert_eq!(decode(&[0]), Err(CodecError::UnsupportedVersion(0)));
    let mut newer = good.clone();
    newer[0] = FORMAT_VERSION + 1;
    assert_eq!(
        decode(&newer),
        Err(CodecError::UnsupportedVersion(FORMAT_VERSION + 1))
    );
    // Three bytes short: the last item's u32 finds 3 of its 4 bytes.
    assert_eq!(
        decode(&good[..good.len() - 3]),
        Err(CodecError::Truncated(1))
    );
    let mut long = good.clone();
    long.extend([0, 0]);
    assert_eq!(decode(&long), Err(CodecError::Trailing(2)));
}

/// A record written by format 1, kept as it was written: every later
/// format must still read it, with these values.
#[test]
fn a_record_written_in_format_1_still_reads() {
    let hex = include_str!("v1-record.hex").trim();
    let record: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(record[0], 1);
    let state = decode(&record).unwrap();
    assert_eq!(
        (state.first_seen_s, state.last_seen_s, state.events),
        (1_795_813_200, 1_795_899_600, 4_321)
    );
    assert_eq!(encode(&state), record);
}
