use proptest::prelude::*;

use super::*;
use crate::decode::{Decoder, Format};

fn fp() -> Fingerprinter {
    Fingerprinter::new(b"test-key")
}

fn ok(json: &str) -> Decoded {
    decode(json, &fp()).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn err(json: &str) -> DecodeError {
    decode(json, &fp()).expect_err(json)
}

const MINIMAL: &str =
    r#"{"ts":"2026-11-27T21:00:00Z","token_id":"AKIA1","issuer":"aws","action":"s3:GetObject"}"#;

#[test]
fn decodes_required_and_optional_fields() {
    let d = ok(
        r#"{"ts":1795813200123,"token_id":"AKIA1","issuer":"aws","action":"s3:GetObject",
        "principal":"alice","src_ip":"2001:db8::1","user_agent":"aws-cli/2","device_id":"d1",
        "session_id":"s1","resource":"bucket/key","status":200,"bytes_out":18446744073709551615,
        "records_out":3,"request_id":"r-1","extra":{"nested":[1,2,{"x":null}]}}"#,
    );
    let e = d.event;
    assert_eq!(e.ts_ms, 1_795_813_200_123);
    assert_eq!(
        (e.token_id.as_str(), e.issuer.as_str(), e.action.as_str()),
        ("AKIA1", "aws", "s3:GetObject")
    );
    assert_eq!(e.src_ip, Some("2001:db8::1".parse().unwrap()));
    assert_eq!(e.status, Some(200));
    assert_eq!(e.bytes_out, Some(u64::MAX));
    assert_eq!(e.records_out, Some(3));
    assert_eq!(e.request_id.as_deref(), Some("r-1"));
    assert!(d.secret.is_none());
}

#[test]
fn accepts_rfc3339_offsets_and_epoch_ms() {
    let a = ok(MINIMAL).event.ts_ms;
    let b = ok(&MINIMAL.replace("2026-11-27T21:00:00Z", "2026-11-27T22:00:00+01:00"))
        .event
        .ts_ms;
    let c = ok(&MINIMAL.replace("\"2026-11-27T21:00:00Z\"", "1795813200000"))
        .event
        .ts_ms;
    assert_eq!(
        (a, b, c),
        (1_795_813_200_000, 1_795_813_200_000, 1_795_813_200_000)
    );
}

#[test]
fn unescapes_strings() {
    let e = ok(&MINIMAL.replace("s3:GetObject", r"GET \/v1\/orders\/{id} \u00e9")).event;
    assert_eq!(e.action, "GET /v1/orders/{id} é");
}

#[test]
fn raw_secret_becomes_fingerprint_and_is_kept_apart() {
    let secret = "ghp_CANARY0123456789abcdefghijklmnopqrstu";
    let json = MINIMAL.replace(r#""token_id":"AKIA1""#, &format!(r#""token":"{secret}""#));
    let d = ok(&json);
    assert_eq!(d.event.token_id, fp().fingerprint(secret));
    assert_eq!(d.secret.as_ref().map(Secret::expose), Some(secret));
    assert!(!format!("{:?}", d).contains("CANARY"));
    assert!(!d.event.to_json().contains("CANARY"));
}

#[test]
fn missing_or_empty_required_fields() {
    assert_eq!(
        err(&MINIMAL.replace(r#""token_id":"AKIA1","#, "")),
        DecodeError::MissingField("token_id")
    );
    assert_eq!(
        err(&MINIMAL.replace(r#""AKIA1""#, r#""""#)),
        DecodeError::MissingField("token_id")
    );
    assert_eq!(
        err(&MINIMAL.replace(r#""AKIA1""#, "null")),
        DecodeError::MissingField("token_id")
    );
    assert_eq!(
        err(&MINIMAL.replace(r#""issuer":"aws","#, "")),
        DecodeError::MissingField("issuer")
    );
    assert_eq!(
        err(&MINIMAL.replace(r#","action":"s3:GetObject""#, "")),
        DecodeError::MissingField("action")
    );
    assert_eq!(
        err(&MINIMAL.replace(r#""ts":"2026-11-27T21:00:00Z","#, "")),
        DecodeError::MissingField("ts")
    );
}

#[test]
fn wrong_types_name_the_field() {
    assert_eq!(
        err(&MINIMAL.replace(r#""AKIA1""#, "17")),
        DecodeError::WrongType("token_id")
    );
    assert_eq!(
        err(&MINIMAL.replace('}', r#","status":"200"}"#)),
        DecodeError::WrongType("status")
    );
    assert_eq!(
        err(&MINIMAL.replace('}', r#","status":70000}"#)),
        DecodeError::OutOfRange("status")
    );
    assert_eq!(
        err(&MINIMAL.replace('}', r#","bytes_out":-1}"#)),
        DecodeError::OutOfRange("bytes_out")
    );
    assert_eq!(
        err(&MINIMAL.replace('}', r#","bytes_out":1.5}"#)),
        DecodeError::WrongType("bytes_out")
    );
    assert_eq!(
        err(&MINIMAL.replace('}', r#","principal":["a"]}"#)),
        DecodeError::WrongType("principal")
    );
    assert_eq!(
        err(&MINIMAL.replace('}', r#","bytes_out":18446744073709551616}"#)),
        DecodeError::OutOfRange("bytes_out")
    );
    assert_eq!(
        err(&MINIMAL.replace('}', r#","lat":1e400}"#)),
        DecodeError::OutOfRange("lat")
    );
}

#[test]
fn invalid_ip_and_timestamps() {
    for ip in ["300.1.1.1", "1.2.3", "::g", "1.2.3.4:80", " 1.2.3.4"] {
        assert_eq!(
            err(&MINIMAL.replace('}', &format!(r#","src_ip":"{ip}"}}"#))),
            DecodeError::InvalidIp,
            "{ip}"
        );
    }
    for ts in [
        r#""yesterday""#,
        r#""2026-11-27""#,
        "-1",
        "253402300800000",
        "1.5e12",
        "true",
        "18446744073709551615",
    ] {
        assert_eq!(
            err(&MINIMAL.replace(r#""2026-11-27T21:00:00Z""#, ts)),
            DecodeError::InvalidTimestamp,
            "{ts}"
        );
    }
}

#[test]
fn structural_errors() {
    assert_eq!(err("{"), DecodeError::InvalidJson);
    assert_eq!(err(r#"{"ts":1}x"#), DecodeError::InvalidJson);
    assert_eq!(err(""), DecodeError::InvalidJson);
    assert_eq!(err("[1,2]"), DecodeError::NotAnObject);
    assert_eq!(err("42"), DecodeError::NotAnObject);
    assert_eq!(
        err(&MINIMAL.replace('}', r#","issuer":"x"}"#)),
        DecodeError::DuplicateField("issuer")
    );
    // Deep nesting: in an unknown field it is refused as too deep (counted
    // while skipping); in a known field it is a type error; unbalanced it is
    // too deep too. None overflow the stack.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(
        err(&MINIMAL.replace('}', &format!(r#","x":{deep}}}"#))),
        DecodeError::TooDeep
    );
    let nested_ok = r#","x":{"a":[1,[2,{"b":[3]}]]}}"#;
    assert!(decode(&MINIMAL.replace('}', nested_ok), &fp()).is_ok());
    assert_eq!(
        err(&MINIMAL.replace('}', &format!(r#","principal":{deep}}}"#))),
        DecodeError::WrongType("principal")
    );
    assert_eq!(
        err(&MINIMAL.replace('}', &format!(r#","x":{}}}"#, "[".repeat(100_000)))),
        DecodeError::TooDeep
    );
    let wide = format!(r#","x":[{}0]}}"#, "0,".repeat(20_000));
    assert_eq!(err(&MINIMAL.replace('}', &wide)), DecodeError::TooManyItems);
}

#[test]
fn decoder_checks_size_and_utf8_first() {
    let d = Decoder::new(Format::Canonical, 64, fp());
    assert_eq!(d.decode(&[b'{'; 65]).unwrap_err(), DecodeError::TooLarge);
    assert_eq!(
        d.decode(b"{\"ts\":\xff}").unwrap_err(),
        DecodeError::InvalidUtf8
    );
    assert!(
        Decoder::new(Format::Canonical, 1024, fp())
            .decode(MINIMAL.as_bytes())
            .is_ok()
    );
}

#[test]
fn reasons_are_distinct() {
    let mut reasons = DecodeError::REASONS.to_vec();
    reasons.sort();
    reasons.dedup();
    assert_eq!(reasons.len(), DecodeError::REASONS.len());
    assert_eq!(DecodeError::WrongType("status").reason(), "wrong_type");
    assert_eq!(DecodeError::WrongType("status").field(), Some("status"));
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Decoder::new(Format::Canonical, 4096, fp()).decode(&bytes);
    }

    #[test]
    fn never_panics_on_mutated_valid_records(pos in 0usize..MINIMAL.len(), byte in any::<u8>()) {
        let mut bytes = MINIMAL.as_bytes().to_vec();
        let unchanged = bytes[pos] == byte;
        bytes[pos] = byte;
        let decoded = Decoder::new(Format::Canonical, 4096, fp()).decode(&bytes);
        // A "mutation" that changes nothing must still decode.
        prop_assert!(!unchanged || decoded.is_ok());
    }

    /// Good input still decodes, whatever its values: any event written as
    /// canonical JSON reads back as itself.
    #[test]
    fn any_valid_event_reads_back_as_itself(
        ts_ms in 0i64..253_402_300_799_999,
        token_id in "\\PC{1,40}",
        issuer in "[a-z][a-z0-9-]{0,15}",
        action in "\\PC{1,60}",
        principal in proptest::option::of("\\PC{1,30}"),
        ip in proptest::option::of(any::<std::net::IpAddr>()),
        user_agent in proptest::option::of("\\PC{1,80}"),
        status in proptest::option::of(100u16..600),
        bytes_out in proptest::option::of(any::<u64>()),
        request_id in proptest::option::of("[A-Za-z0-9-]{1,30}"),
    ) {
        prop_assume!(!token_id.trim().is_empty() && !action.trim().is_empty());
        prop_assume!(principal.as_ref().is_none_or(|p| !p.trim().is_empty()));
        prop_assume!(user_agent.as_ref().is_none_or(|u| !u.trim().is_empty()));
        let mut e = Event::new(ts_ms, token_id, issuer, action);
        e.principal = principal;
        e.src_ip = ip;
        e.user_agent = user_agent;
        e.status = status;
        e.bytes_out = bytes_out;
        e.request_id = request_id;
        let decoded = Decoder::new(Format::Canonical, 1 << 16, fp())
            .with_skew(crate::decode::Skew { max_future_ms: i64::MAX / 2, max_past_ms: None })
            .decode(e.to_json().as_bytes());
        prop_assert_eq!(decoded.map(|d| d.event), Ok(e));
    }
}

#[test]
fn redacts_raw_secrets_before_a_record_is_dead_lettered() {
    let d = Decoder::new(Format::Canonical, 4096, fp());
    let bad = br#"{"ts":"nope","token":"ghp_CANARY_dlq","issuer":"gh","action":"x"}"#;
    assert_eq!(d.decode(bad).unwrap_err(), DecodeError::InvalidTimestamp);
    let safe = String::from_utf8(d.redactor().redact(bad).unwrap().bytes).unwrap();
    assert!(!safe.contains("CANARY"));
    assert!(safe.contains(&fp().fingerprint("ghp_CANARY_dlq")));
    assert_eq!(
        d.redactor().redact(br#"{"token_id":"t"}"#),
        None,
        "nothing to redact"
    );
    assert_eq!(d.redactor().redact(b"not json"), None);
    // Not UTF-8, so not JSON: the byte scan still finds the secret.
    let latin1 = b"{\"token\":\"CANARY-x\",\"ua\":\"caf\xe9\"}";
    assert_eq!(d.decode(latin1).unwrap_err(), DecodeError::InvalidUtf8);
    let safe = d.redactor().redact(latin1).unwrap().bytes;
    assert!(!safe.windows(6).any(|w| w == b"CANARY"));
}
