use proptest::prelude::*;

use crate::decode::{DecodeError, Decoder, Format, Limits, Output, Rejected, Skew};
use crate::fingerprint::Fingerprinter;

/// A fixed "now" a little after the fixtures' 2026-11-20.
const NOW_MS: i64 = 1_795_800_000_000;

fn fixture(name: &str) -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/formats/");
    std::fs::read(format!("{dir}{name}")).unwrap()
}

fn decoder(format: Format) -> Decoder {
    Decoder::new(format, 1 << 20, Fingerprinter::new(b"k"))
}

fn decode_all(format: Format, record: &[u8]) -> Result<Output, DecodeError> {
    let mut out = Output::default();
    decoder(format).decode_at(record, NOW_MS, &mut out)?;
    Ok(out)
}

fn one(format: Format, record: &[u8]) -> crate::Event {
    let mut all = decode_all(format, record).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (all.events.len(), all.rejected.len(), all.skipped),
        (1, 0, 0)
    );
    let d = all.events.remove(0);
    assert!(d.secret.is_none(), "vendor formats carry no raw secret");
    d.event
}

#[test]
fn cloudtrail_record_maps_the_documented_fields() {
    let e = one(Format::Cloudtrail, &fixture("cloudtrail-getobject.json"));
    assert_eq!(e.token_id, "AKIAIOSFODNN7EXAMPLE");
    assert_eq!(e.issuer, "aws");
    assert_eq!(e.action, "s3:GetObject");
    assert_eq!(
        e.principal.as_deref(),
        Some("arn:aws:iam::123456789012:user/Alice")
    );
    assert_eq!(e.src_ip, Some("81.2.69.160".parse().unwrap()));
    assert_eq!(e.bytes_out, Some(52_428_800));
    assert_eq!(e.status, Some(200));
    assert_eq!(
        e.resource.as_deref(),
        Some("arn:aws:s3:::acme-exports/customers/2026-11.csv")
    );
    assert_eq!(e.request_id.as_deref(), Some("8E5JZ3KX5VQJ2D3Y"));
    assert_eq!(e.ts_ms, 1_795_183_392_000);
    assert!(e.user_agent.unwrap().starts_with("[aws-cli/2.15.0"));
}

#[test]
fn cloudtrail_file_shape_yields_every_record() {
    let all = decode_all(Format::Cloudtrail, &fixture("cloudtrail-file.json")).unwrap();
    assert_eq!((all.rejected.len(), all.skipped), (0, 0));
    let events: Vec<_> = all.events.into_iter().map(|d| d.event).collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].action, "iam:ListUsers");
    assert_eq!(events[0].src_ip, Some("2001:db8::7".parse().unwrap()));
    assert_eq!(events[1].token_id, "ASIAEXAMPLETEMPKEY");
    assert_eq!(events[1].action, "ec2:TerminateInstances");
    // "AWS Internal" is no address; an authorization error is a 403.
    assert_eq!((events[1].src_ip, events[1].status), (None, Some(403)));
    assert_eq!(
        events[1].session_id.as_deref(),
        Some("arn:aws:iam::123456789012:role/ci")
    );
}

#[test]
fn a_bad_record_in_a_cloudtrail_file_is_refused_alone() {
    let text = String::from_utf8(fixture("cloudtrail-file.json")).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    let [first, second] = [&file["Records"][0], &file["Records"][1]];
    let mut broken = second.clone();
    broken["eventTime"] = "yesterday".into();
    let mut service = first.clone();
    service["userIdentity"] =
        serde_json::json!({"type": "AWSService", "invokedBy": "ec2.amazonaws.com"});
    service["eventType"] = "AwsServiceEvent".into();
    let mut future = first.clone();
    future["eventTime"] = "2099-01-01T00:00:00Z".into();
    let records = serde_json::json!({"Records": [first, broken, service, second, future]});
    let out = decode_all(Format::Cloudtrail, records.to_string().as_bytes()).unwrap();

    // The good records decode; the bad ones are refused one by one, each
    // with its position, its reason and itself; the service event is no
    // token's call.
    let ids: Vec<_> = out
        .events
        .iter()
        .map(|d| d.event.token_id.as_str())
        .collect();
    assert_eq!(ids, ["AKIAIOSFODNN7EXAMPLE", "ASIAEXAMPLETEMPKEY"]);
    let element = |v: &serde_json::Value| serde_json::to_vec(v).unwrap();
    assert_eq!(
        out.rejected,
        vec![
            Rejected {
                index: 1,
                error: DecodeError::InvalidTimestamp,
                element: element(&broken),
            },
            Rejected {
                index: 4,
                error: DecodeError::TimestampSkew,
                element: element(&future),
            },
        ]
    );
    assert_eq!(out.skipped, 1);

    // What makes the file itself unreadable still refuses it whole.
    assert_eq!(
        decode_all(Format::Cloudtrail, br#"{"Records":{"eventName":"x"}}"#).unwrap_err(),
        DecodeError::WrongType("Records")
    );
}

#[test]
fn records_that_are_no_token_s_call_are_skipped_not_refused() {
    let skipped = |format: Format, record: &str| {
        let out = decode_all(format, record.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert!(out.events.is_empty() && out.rejected.is_empty(), "{record}");
        out.skipped
    };
    let text = |name: &str| String::from_utf8(fixture(name)).unwrap();
    let mut service: serde_json::Value =
        serde_json::from_str(&text("cloudtrail-getobject.json")).unwrap();
    service["userIdentity"] = serde_json::json!({"type": "AWSService"});
    assert_eq!(skipped(Format::Cloudtrail, &service.to_string()), 1);
    let anonymous = text("k8s-get-secret.json")
        .replace(
            "\"authentication.kubernetes.io/credential-id\"",
            "\"other\"",
        )
        .replace("system:serviceaccount:payments:api", "system:anonymous");
    assert_eq!(skipped(Format::K8s, &anonymous), 1);
    let mut okta: serde_json::Value = serde_json::from_str(&text("okta-api-token.json")).unwrap();
    okta["transaction"]["detail"] = serde_json::json!({});
    okta["authenticationContext"]["externalSessionId"] = serde_json::Value::Null;
    assert_eq!(skipped(Format::Okta, &okta.to_string()), 1);
    let mut ocsf: serde_json::Value =
        serde_json::from_str(&text("ocsf-api-activity.json")).unwrap();
    ocsf["actor"]["user"]["credential_uid"] = serde_json::Value::Null;
    ocsf["actor"]["session"]["credential_uid"] = serde_json::Value::Null;
    assert_eq!(skipped(Format::Ocsf, &ocsf.to_string()), 1);

    // A record that is not of the format at all is still refused: a skip
    // needs the fields that make it one of the format's records.
    assert_eq!(
        decode_all(Format::Github, br#"{"note":"hello"}"#).unwrap_err(),
        DecodeError::MissingField("created_at")
    );
    assert_eq!(
        decoder(Format::Github)
            .decode(service.to_string().as_bytes())
            .unwrap_err(),
        DecodeError::MissingField("created_at")
    );
}

#[test]
fn cloudtrail_inside_an_eventbridge_event_is_read_from_detail() {
    let record = String::from_utf8(fixture("cloudtrail-getobject.json")).unwrap();
    let envelope = format!(
        r#"{{"version":"0","id":"6a7e8feb","detail-type":"AWS API Call via CloudTrail","source":"aws.s3","account":"123456789012","time":"2026-11-20T14:03:12Z","region":"us-east-1","resources":[],"detail":{record}}}"#
    );
    let e = one(Format::Cloudtrail, envelope.as_bytes());
    assert_eq!(
        (e.token_id.as_str(), e.action.as_str()),
        ("AKIAIOSFODNN7EXAMPLE", "s3:GetObject")
    );
    assert_eq!(e, one(Format::Cloudtrail, record.as_bytes()));
}

#[test]
fn github_event_uses_the_token_id_and_access_type() {
    let e = one(Format::Github, &fixture("github-git-clone.json"));
    assert_eq!(
        (e.token_id.as_str(), e.issuer.as_str()),
        ("112233", "github")
    );
    assert_eq!(e.action, "git.clone");
    assert_eq!(e.principal.as_deref(), Some("octocat"));
    assert_eq!(e.src_ip, Some("81.2.69.160".parse().unwrap()));
    assert_eq!(
        e.device_id.as_deref(),
        Some("Personal access token (classic)")
    );
    assert_eq!(e.resource.as_deref(), Some("acme/payments"));
    assert_eq!(e.ts_ms, 1_795_700_000_000);
    // Without token_id, the hashed token identifies it; without either the
    // event was not made with a token.
    let text = String::from_utf8(fixture("github-git-clone.json")).unwrap();
    let hashed = text.replace("\"token_id\":112233,", "");
    assert_eq!(
        one(Format::Github, hashed.as_bytes()).token_id,
        "kAFIu0E2ihHHRPo0vCm7C2VQzfbbXO0yhZ6ErXWr5Io="
    );
    let web = hashed.replace(
        "\"hashed_token\":\"kAFIu0E2ihHHRPo0vCm7C2VQzfbbXO0yhZ6ErXWr5Io=\",",
        "",
    );
    let out = decode_all(Format::Github, web.as_bytes()).unwrap();
    assert_eq!(
        (out.events.len(), out.skipped),
        (0, 1),
        "a web-session event is skipped"
    );
    assert_eq!(
        decoder(Format::Github).decode(web.as_bytes()).unwrap_err(),
        DecodeError::MissingField("token")
    );
}

#[test]
fn k8s_event_uses_the_credential_id() {
    let e = one(Format::K8s, &fixture("k8s-get-secret.json"));
    assert_eq!(e.token_id, "JTI=5e1c7a2b-9f3d-4c8e-a1b2-c3d4e5f6a7b8");
    assert_eq!(
        e.principal.as_deref(),
        Some("system:serviceaccount:payments:api")
    );
    assert_eq!(e.action, "get secrets");
    assert_eq!(e.status, Some(200));
    assert_eq!(
        e.resource.as_deref(),
        Some("/api/v1/namespaces/payments/secrets/db-password")
    );
    assert_eq!(
        e.request_id.as_deref(),
        Some("4f9d0b6e-1a6e-4f3a-9b7e-2c6d8e0f1a2b")
    );
    assert_eq!(e.ts_ms, 1_795_183_392_123);
    let text = String::from_utf8(fixture("k8s-get-secret.json")).unwrap();
    assert_eq!(
        decode_all(
            Format::K8s,
            text.replace("\"kind\":\"Event\"", "\"kind\":\"EventList\"")
                .as_bytes()
        )
        .unwrap_err(),
        DecodeError::WrongKind("kind")
    );
}

#[test]
fn okta_event_uses_the_api_token_id() {
    let e = one(Format::Okta, &fixture("okta-api-token.json"));
    assert_eq!(
        (e.token_id.as_str(), e.issuer.as_str()),
        ("00T1a2b3c4d5e6f7g8h9", "okta")
    );
    assert_eq!(e.action, "group.user_membership.remove");
    assert_eq!(e.principal.as_deref(), Some("admin@acme.example"));
    assert_eq!(e.session_id.as_deref(), Some("trs6Xn0mF9ZQhq2yQ3Gd5kRw"));
    assert_eq!(e.resource.as_deref(), Some("bob@acme.example"));
    assert_eq!(e.status, Some(200));
    assert_eq!(e.ts_ms, 1_795_183_392_123);
}

#[test]
fn ocsf_api_activity_maps_and_other_classes_are_refused() {
    let e = one(Format::Ocsf, &fixture("ocsf-api-activity.json"));
    assert_eq!(e.token_id, "AKIAIOSFODNN7EXAMPLE");
    assert_eq!(e.action, "s3:GetObject");
    assert_eq!(e.bytes_out, Some(52_428_800));
    assert_eq!(e.session_id.as_deref(), Some("sess-7"));
    assert_eq!(e.device_id.as_deref(), Some("i-0abc"));
    let text = String::from_utf8(fixture("ocsf-api-activity.json")).unwrap();
    let auth = text.replace("\"class_uid\":6003", "\"class_uid\":3002");
    assert_eq!(
        decode_all(Format::Ocsf, auth.as_bytes()).unwrap_err(),
        DecodeError::WrongKind("class_uid")
    );
}

#[test]
fn the_issuer_can_be_configured() {
    let d = decoder(Format::Cloudtrail).with_issuer(Some("aws-prod"));
    let mut out = Output::default();
    d.decode_at(&fixture("cloudtrail-getobject.json"), NOW_MS, &mut out)
        .unwrap();
    assert_eq!(out.events[0].event.issuer, "aws-prod");
}

/// Every format, and a record of it.
fn samples() -> Vec<(Format, Vec<u8>)> {
    vec![
        (
            Format::Canonical,
            br#"{"ts":"2026-11-20T14:03:12Z","token_id":"k","issuer":"api","action":"GET /"}"#
                .to_vec(),
        ),
        (Format::Cloudtrail, fixture("cloudtrail-getobject.json")),
        (Format::Github, fixture("github-git-clone.json")),
        (Format::K8s, fixture("k8s-get-secret.json")),
        (Format::Okta, fixture("okta-api-token.json")),
        (Format::Ocsf, fixture("ocsf-api-activity.json")),
    ]
}

/// `record` with `"x": value` added as its first member.
fn with_member(record: &[u8], value: &str) -> Vec<u8> {
    with_named(record, "x", value)
}

fn with_named(record: &[u8], name: &str, value: &str) -> Vec<u8> {
    let mut out = format!("{{\"{name}\":").into_bytes();
    out.extend_from_slice(value.as_bytes());
    out.push(b',');
    out.extend_from_slice(&record[1..]);
    out
}

#[test]
fn every_format_refuses_hostile_records_with_a_reason() {
    for (format, record) in samples() {
        assert_eq!(
            decode_all(format, &record).map(|v| v.events.len()).ok(),
            Some(1),
            "{format:?}"
        );
        let small = Decoder::new(format, record.len() - 1, Fingerprinter::new(b"k"));
        let name = format.as_str();
        assert_eq!(
            small.decode(&record).unwrap_err(),
            DecodeError::TooLarge,
            "{name}"
        );
        let mut bad_utf8 = record.clone();
        bad_utf8.insert(10, 0xff);
        assert_eq!(
            decode_all(format, &bad_utf8).unwrap_err(),
            DecodeError::InvalidUtf8,
            "{name}"
        );
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(
            decode_all(format, &with_member(&record, &deep)).unwrap_err(),
            DecodeError::TooDeep,
            "{name}"
        );
        let huge = format!("[{}0]", "0,".repeat(20_000));
        assert_eq!(
            decode_all(format, &with_member(&record, &huge)).unwrap_err(),
            DecodeError::TooManyItems,
            "{name}"
        );
        // Canonical skips unknown members unparsed, so its case is a known one.
        let (member, field) = match format {
            Format::Canonical => ("lat", "lat"),
            _ => ("x", "number"),
        };
        assert_eq!(
            decode_all(format, &with_named(&record, member, "1e400")).unwrap_err(),
            DecodeError::OutOfRange(field),
            "{name}"
        );
        // Far future and far past, against the configured skew.
        let skewed = |now_ms: i64, skew: Skew| {
            let mut out = Output::default();
            decoder(format)
                .with_skew(skew)
                .decode_at(&record, now_ms, &mut out)
                .map(|()| out.events.len())
        };
        let ts = decode_all(format, &record).unwrap().events[0].event.ts_ms;
        let skew = Skew {
            max_future_ms: 60_000,
            max_past_ms: Some(3_600_000),
        };
        assert_eq!(skewed(ts, skew), Ok(1), "{name}");
        assert_eq!(
            skewed(ts - 120_000, skew),
            Err(DecodeError::TimestampSkew),
            "{name}"
        );
        assert_eq!(
            skewed(ts + 7_200_000, skew),
            Err(DecodeError::TimestampSkew),
            "{name}"
        );
        assert_eq!(
            skewed(ts + 100 * 365 * 86_400_000, Skew::default()),
            Ok(1),
            "{name}: no past limit by default"
        );
    }
}

#[test]
fn vendor_numbers_out_of_range_name_their_field() {
    let text = String::from_utf8(fixture("cloudtrail-getobject.json")).unwrap();
    let negative = text.replace(
        "\"bytesTransferredOut\":52428800.0",
        "\"bytesTransferredOut\":-5",
    );
    assert_eq!(
        decode_all(Format::Cloudtrail, negative.as_bytes()).unwrap_err(),
        DecodeError::OutOfRange("additionalEventData.bytesTransferredOut")
    );
    let text = String::from_utf8(fixture("k8s-get-secret.json")).unwrap();
    let status = text.replace("\"code\":200", "\"code\":70000");
    assert_eq!(
        decode_all(Format::K8s, status.as_bytes()).unwrap_err(),
        DecodeError::OutOfRange("responseStatus.code")
    );
}

#[test]
fn limits_are_configurable() {
    let (format, record) = (Format::Okta, fixture("okta-api-token.json"));
    let tight = decoder(format).with_limits(Limits {
        max_depth: 3,
        max_array_items: 10,
    });
    assert_eq!(tight.decode(&record).unwrap_err(), DecodeError::TooDeep);
}

/// Arbitrary JSON, with some of the fields decoders look for.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "[a-zA-Z0-9:./ -]{0,12}".prop_map(serde_json::Value::from),
    ];
    let keys = prop_oneof![
        Just("eventTime".to_string()),
        Just("userIdentity".to_string()),
        Just("accessKeyId".to_string()),
        Just("eventSource".to_string()),
        Just("eventName".to_string()),
        Just("Records".to_string()),
        Just("@timestamp".to_string()),
        Just("token_id".to_string()),
        Just("action".to_string()),
        Just("verb".to_string()),
        Just("user".to_string()),
        Just("sourceIPs".to_string()),
        Just("published".to_string()),
        Just("transaction".to_string()),
        Just("class_uid".to_string()),
        Just("time".to_string()),
        Just("actor".to_string()),
        Just("api".to_string()),
        "[a-z]{1,6}",
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(keys.clone(), inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn no_format_panics_on_arbitrary_json(value in json()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        for format in Format::ALL {
            if let Ok(out) = decode_all(format, &bytes) {
                // One record is one outcome, except a CloudTrail file.
                let outcomes = out.events.len() + out.rejected.len() + out.skipped as usize;
                prop_assert!(outcomes == 1 || format == Format::Cloudtrail);
                for r in &out.rejected {
                    prop_assert!(serde_json::from_slice::<serde_json::Value>(&r.element).is_ok());
                }
            }
        }
    }

    /// Good input still decodes: a real CloudTrail record with other values
    /// in its fields maps them all.
    #[test]
    fn a_real_record_with_any_values_still_decodes(
        key_id in "(AKIA|ASIA)[A-Z0-9]{16}",
        event_name in "[A-Z][A-Za-z]{2,30}",
        ip in any::<std::net::Ipv4Addr>(),
        bytes in 0u64..1 << 50,
    ) {
        let mut record: serde_json::Value =
            serde_json::from_slice(&fixture("cloudtrail-getobject.json")).unwrap();
        record["userIdentity"]["accessKeyId"] = key_id.clone().into();
        record["eventName"] = event_name.clone().into();
        record["sourceIPAddress"] = ip.to_string().into();
        record["additionalEventData"]["bytesTransferredOut"] = bytes.into();
        let e = one(Format::Cloudtrail, &serde_json::to_vec(&record).unwrap());
        prop_assert_eq!(e.token_id, key_id);
        prop_assert_eq!(e.action, format!("s3:{event_name}"));
        prop_assert_eq!(e.src_ip, Some(std::net::IpAddr::V4(ip)));
        prop_assert_eq!(e.bytes_out, Some(bytes));
    }

    #[test]
    fn no_format_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for format in Format::ALL {
            let _ = decode_all(format, &bytes);
        }
    }
}
