use proptest::prelude::*;

use super::*;

/// Bytes of a state with no principal, after the version byte.
fn state_len() -> usize {
    encode(&TokenState::default(), None).len() - 1 - 2
}

#[test]
fn a_state_takes_this_many_bytes() {
    // The changelog's bytes per token, before the key and Kafka's framing:
    // the version byte, 3 × u32, volume 94, geo 86, novelty 78, position
    // 14, and 2 for "no principal" (a principal adds its length).
    assert_eq!(encode(&TokenState::default(), None).len(), 287);
    assert_eq!(encode(&TokenState::default(), Some("role/etl")).len(), 295);
}

proptest! {
    /// Every field is written and read back exactly: any record of the
    /// right length (every bit pattern is a state, NaNs included) comes
    /// back byte for byte, with or without a principal.
    #[test]
    fn every_record_round_trips_byte_for_byte(
        body in prop::collection::vec(any::<u8>(), state_len()),
        principal in prop::option::of("[a-z/:@.-]{0,40}"),
    ) {
        let mut record = vec![FORMAT_VERSION];
        record.extend(&body);
        match &principal {
            Some(p) => {
                record.extend((p.len() as u16).to_le_bytes());
                record.extend(p.as_bytes());
            }
            None => record.extend([0xff, 0xff]),
        }
        let (state, read) = decode(&record).unwrap();
        prop_assert_eq!(&read, &principal);
        prop_assert_eq!(encode(&state, read.as_deref()), record);
    }
}

#[test]
fn bad_records_are_refused_with_the_reason() {
    let good = encode(&TokenState::default(), None);
    assert_eq!(decode(&[]), Err(CodecError::Empty));
    assert_eq!(decode(&[0]), Err(CodecError::UnsupportedVersion(0)));
    let mut newer = good.clone();
    newer[0] = FORMAT_VERSION + 1;
    assert_eq!(
        decode(&newer),
        Err(CodecError::UnsupportedVersion(FORMAT_VERSION + 1))
    );
    // One byte short: the principal's length finds 1 of its 2 bytes.
    assert_eq!(
        decode(&good[..good.len() - 1]),
        Err(CodecError::Truncated(1))
    );
    let mut long = good.clone();
    long.extend([0, 0]);
    assert_eq!(decode(&long), Err(CodecError::Trailing(2)));
    let mut named = good[..good.len() - 2].to_vec();
    named.extend([4, 0, b'r', b'o']);
    assert_eq!(decode(&named), Err(CodecError::Truncated(2)));
    let mut bad_utf8 = good[..good.len() - 2].to_vec();
    bad_utf8.extend([2, 0, 0xc3, 0x28]);
    assert_eq!(decode(&bad_utf8), Err(CodecError::NotUtf8));
}

/// A record written by format 1 (the previous format), kept as it was
/// written: this format must still read it, with these values, no
/// position (it covers no event) and no principal.
#[test]
fn a_record_written_in_format_1_still_reads() {
    let hex = include_str!("v1-record.hex").trim();
    let record: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(record[0], 1);
    let (state, principal) = decode(&record).unwrap();
    assert_eq!(
        (state.first_seen_s, state.last_seen_s, state.events),
        (1_795_813_200, 1_795_899_600, 4_321)
    );
    assert_eq!(principal, None);
    assert_eq!(state.position, Position::default());
    assert!(!state.position.covers(&Position::new("api-calls", 0, 0)));
    // Written again, it is format 2 and reads back the same.
    let again = encode(&state, None);
    assert_eq!(again[0], 2);
    assert_eq!(&again[1..=state_len() - 14], &record[1..]);
    assert_eq!(decode(&again), Ok((state, None)));
}

#[test]
fn a_position_covers_earlier_offsets_of_its_own_partition_only() {
    let at = Position::new("api-calls", 2, 100);
    assert!(at.covers(&Position::new("api-calls", 2, 100)));
    assert!(at.covers(&Position::new("api-calls", 2, 7)));
    assert!(!at.covers(&Position::new("api-calls", 2, 101)));
    assert!(!at.covers(&Position::new("api-calls", 1, 7)));
    assert!(!at.covers(&Position::new("other-topic", 2, 7)));
    // Stable across processes and builds (it is stored): FNV-1a, folded.
    assert_eq!(crate::state::topic_tag(""), 0x811c ^ 0x9dc5);
    assert_eq!(crate::state::topic_tag("api-calls"), 0x3bba);
}
