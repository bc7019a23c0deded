use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::option::of;
use proptest::prelude::*;

use super::*;
use crate::decode::{Decoder, Format};
use crate::fingerprint::Fingerprinter;
use crate::time::MAX_TS_MS;

fn text() -> impl Strategy<Value = String> {
    // Non-empty (the decoder reads "" as absent), with escapes and non-ASCII.
    "[a-zA-Z0-9 /:{}._\"\\\\\u{e9}\u{1F600}\u{7}-]{1,24}"
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
    ]
}

fn coordinate() -> impl Strategy<Value = f64> {
    -180.0f64..180.0
}

prop_compose! {
    fn event()(
        ts_ms in 0..=MAX_TS_MS,
        token_id in text(), issuer in text(), action in text(),
        principal in of(text()), src_ip in of(ip()), user_agent in of(text()),
        device_id in of(text()), session_id in of(text()), resource in of(text()),
        status in of(any::<u16>()), bytes_out in of(any::<u64>()), records_out in of(any::<u64>()),
        request_id in of(text()),
        geo in of((text(), of(text()), coordinate(), coordinate(), any::<u16>())),
        asn in of((any::<u32>(), of(text()))),
    ) -> Event {
        let mut e = Event::new(ts_ms, token_id, issuer, action);
        e.principal = principal;
        e.src_ip = src_ip;
        e.user_agent = user_agent;
        e.device_id = device_id;
        e.session_id = session_id;
        e.resource = resource;
        e.status = status;
        e.bytes_out = bytes_out;
        e.records_out = records_out;
        e.request_id = request_id;
        if let Some((country, city, lat, lon, radius)) = geo {
            (e.country, e.city, e.lat, e.lon, e.accuracy_km) = (Some(country.into()), city.map(Into::into), Some(lat), Some(lon), Some(radius));
        }
        if let Some((asn, org)) = asn {
            (e.asn, e.as_org) = (Some(asn), org.map(Into::into));
        }
        e
    }
}

proptest! {
    #[test]
    fn json_event_arrow_event_round_trip(events in proptest::collection::vec(event(), 0..40)) {
        let decoder = Decoder::new(Format::Canonical, 1 << 20, Fingerprinter::new(b"k"))
            .with_skew(crate::decode::Skew::ANY);
        let decoded: Vec<Event> = events
            .iter()
            .map(|e| decoder.decode(e.to_json().as_bytes()).map(|d| d.event))
            .collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&decoded, &events);

        let batch = events_to_record_batch(&decoded).unwrap();
        prop_assert_eq!(batch.num_rows(), events.len());
        prop_assert_eq!(batch.schema(), event_schema());
        prop_assert_eq!(record_batch_to_events(&batch).unwrap(), events);
    }
}

#[test]
fn schema_marks_required_columns_non_nullable() {
    let schema = event_schema();
    let required: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| !f.is_nullable())
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(required, [col::TS, col::TOKEN_ID, col::ISSUER, col::ACTION]);
    assert_eq!(schema.fields().len(), 21);
    // Enrichment columns come last, from `country` on.
    assert_eq!(schema.index_of(col::COUNTRY).unwrap(), ENRICHMENT_START);
    // Every column is built with its field's type.
    for (i, field) in schema.fields().iter().enumerate() {
        assert_eq!(
            event_column(&[], i).data_type(),
            field.data_type(),
            "{}",
            field.name()
        );
    }
}

#[test]
fn rejects_batches_of_another_schema() {
    let other =
        RecordBatch::try_from_iter([("ts", Arc::new(UInt16Array::from(vec![1u16])) as ArrayRef)])
            .unwrap();
    assert!(matches!(
        record_batch_to_events(&other),
        Err(ColumnsError::SchemaMismatch(_))
    ));
}

#[test]
fn src_ip_is_text_in_arrow() {
    let mut e = Event::new(0, "t", "i", "a");
    e.src_ip = Some("::ffff:1.2.3.4".parse().unwrap());
    let batch = events_to_record_batch(std::slice::from_ref(&e)).unwrap();
    let ips = batch
        .column_by_name(col::SRC_IP)
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(ips.value(0), "::ffff:1.2.3.4");
    assert_eq!(record_batch_to_events(&batch).unwrap(), vec![e]);
}
