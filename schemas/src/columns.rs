//! The Arrow form of events: one schema, and lossless conversion between a
//! slice of [`Event`]s and a `RecordBatch`. Detectors read columns; SQL
//! policy rules evaluate over the same batches.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, Float64Array, Float64Builder, RecordBatch, StringArray, StringBuilder,
    TimestampMillisecondArray, TimestampMillisecondBuilder, UInt16Array, UInt16Builder,
    UInt32Array, UInt32Builder, UInt64Array, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use crate::event::Event;

/// Errors converting between events and Arrow.
#[derive(Debug, thiserror::Error)]
pub enum ColumnsError {
    #[error("record batch does not have the event schema: {0}")]
    SchemaMismatch(String),
    #[error("column `{column}` row {row}: {reason}")]
    BadValue {
        column: &'static str,
        row: usize,
        reason: &'static str,
    },
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}

/// Column names in schema order.
pub mod col {
    pub const TS: &str = "ts";
    pub const TOKEN_ID: &str = "token_id";
    pub const ISSUER: &str = "issuer";
    pub const ACTION: &str = "action";
    pub const PRINCIPAL: &str = "principal";
    pub const SRC_IP: &str = "src_ip";
    pub const USER_AGENT: &str = "user_agent";
    pub const DEVICE_ID: &str = "device_id";
    pub const SESSION_ID: &str = "session_id";
    pub const RESOURCE: &str = "resource";
    pub const STATUS: &str = "status";
    pub const BYTES_OUT: &str = "bytes_out";
    pub const RECORDS_OUT: &str = "records_out";
    pub const REQUEST_ID: &str = "request_id";
    pub const COUNTRY: &str = "country";
    pub const CITY: &str = "city";
    pub const LAT: &str = "lat";
    pub const LON: &str = "lon";
    pub const ACCURACY_KM: &str = "accuracy_km";
    pub const ASN: &str = "asn";
    pub const AS_ORG: &str = "as_org";
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        Field::new(
            col::TS,
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        utf8(col::TOKEN_ID, false),
        utf8(col::ISSUER, false),
        utf8(col::ACTION, false),
        utf8(col::PRINCIPAL, true),
        // Text, not bytes: SQL rules compare and match addresses as strings.
        utf8(col::SRC_IP, true),
        utf8(col::USER_AGENT, true),
        utf8(col::DEVICE_ID, true),
        utf8(col::SESSION_ID, true),
        utf8(col::RESOURCE, true),
        Field::new(col::STATUS, DataType::UInt16, true),
        Field::new(col::BYTES_OUT, DataType::UInt64, true),
        Field::new(col::RECORDS_OUT, DataType::UInt64, true),
        utf8(col::REQUEST_ID, true),
        utf8(col::COUNTRY, true),
        utf8(col::CITY, true),
        Field::new(col::LAT, DataType::Float64, true),
        Field::new(col::LON, DataType::Float64, true),
        Field::new(col::ACCURACY_KM, DataType::UInt16, true),
        Field::new(col::ASN, DataType::UInt32, true),
        utf8(col::AS_ORG, true),
    ]))
});

/// The Arrow schema of the canonical event, enrichment columns included.
pub fn event_schema() -> SchemaRef {
    SCHEMA.clone()
}

fn strings<'a>(events: &'a [Event], get: impl Fn(&'a Event) -> Option<&'a str>) -> ArrayRef {
    let bytes = events.iter().map(|e| get(e).map_or(0, str::len)).sum();
    let mut b = StringBuilder::with_capacity(events.len(), bytes);
    for e in events {
        b.append_option(get(e));
    }
    Arc::new(b.finish())
}

macro_rules! primitive {
    ($builder:ty, $events:expr, $get:expr) => {{
        let mut b = <$builder>::with_capacity($events.len());
        for e in $events {
            b.append_option($get(e));
        }
        Arc::new(b.finish()) as ArrayRef
    }};
}

/// The index of the first enrichment column (`country`). The columns before
/// it are the input's, which enrichment never changes.
pub const ENRICHMENT_START: usize = 14;

/// Column `index` of [`event_schema`], built from `events`.
pub fn event_column(events: &[Event], index: usize) -> ArrayRef {
    match index {
        0 => {
            let mut b =
                TimestampMillisecondBuilder::with_capacity(events.len()).with_timezone("UTC");
            for e in events {
                b.append_value(e.ts_ms);
            }
            Arc::new(b.finish())
        }
        1 => strings(events, |e| Some(e.token_id.as_str())),
        2 => strings(events, |e| Some(e.issuer.as_str())),
        3 => strings(events, |e| Some(e.action.as_str())),
        4 => strings(events, |e| e.principal.as_deref()),
        5 => {
            let mut b = StringBuilder::with_capacity(events.len(), events.len() * 16);
            let mut text = String::with_capacity(40);
            for e in events {
                match e.src_ip {
                    Some(ip) => {
                        use std::fmt::Write;
                        text.clear();
                        let _ = write!(text, "{ip}");
                        b.append_value(&text);
                    }
                    None => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        6 => strings(events, |e| e.user_agent.as_deref()),
        7 => strings(events, |e| e.device_id.as_deref()),
        8 => strings(events, |e| e.session_id.as_deref()),
        9 => strings(events, |e| e.resource.as_deref()),
        10 => primitive!(UInt16Builder, events, |e: &Event| e.status),
        11 => primitive!(UInt64Builder, events, |e: &Event| e.bytes_out),
        12 => primitive!(UInt64Builder, events, |e: &Event| e.records_out),
        13 => strings(events, |e| e.request_id.as_deref()),
        14 => strings(events, |e| e.country.as_deref()),
        15 => strings(events, |e| e.city.as_deref()),
        16 => primitive!(Float64Builder, events, |e: &Event| e.lat),
        17 => primitive!(Float64Builder, events, |e: &Event| e.lon),
        18 => primitive!(UInt16Builder, events, |e: &Event| e.accuracy_km),
        19 => primitive!(UInt32Builder, events, |e: &Event| e.asn),
        20 => strings(events, |e| e.as_org.as_deref()),
        _ => panic!("the event schema has no column {index}"),
    }
}

/// Builds a `RecordBatch` with [`event_schema`] from events.
pub fn events_to_record_batch(events: &[Event]) -> Result<RecordBatch, ColumnsError> {
    let columns = (0..SCHEMA.fields().len())
        .map(|i| event_column(events, i))
        .collect();
    Ok(RecordBatch::try_new(event_schema(), columns)?)
}

/// Typed, by-name access to the columns of a batch with the event schema.
struct Columns<'a>(&'a RecordBatch);

impl<'a> Columns<'a> {
    fn get<T: Array + 'static>(&self, name: &'static str) -> Result<&'a T, ColumnsError> {
        let column = self
            .0
            .column_by_name(name)
            .ok_or_else(|| ColumnsError::SchemaMismatch(format!("missing column `{name}`")))?;
        column.as_any().downcast_ref::<T>().ok_or_else(|| {
            ColumnsError::SchemaMismatch(format!("column `{name}` has type {}", column.data_type()))
        })
    }
}

fn opt_str(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_owned())
}

fn req_str(a: &StringArray, i: usize, column: &'static str) -> Result<String, ColumnsError> {
    opt_str(a, i).ok_or(ColumnsError::BadValue {
        column,
        row: i,
        reason: "null in a required column",
    })
}

macro_rules! opt_prim {
    ($a:expr, $i:expr) => {
        $a.is_valid($i).then(|| $a.value($i))
    };
}

/// Reads events back out of a batch with [`event_schema`].
pub fn record_batch_to_events(batch: &RecordBatch) -> Result<Vec<Event>, ColumnsError> {
    let c = Columns(batch);
    let ts = c.get::<TimestampMillisecondArray>(col::TS)?;
    let token_id = c.get::<StringArray>(col::TOKEN_ID)?;
    let issuer = c.get::<StringArray>(col::ISSUER)?;
    let action = c.get::<StringArray>(col::ACTION)?;
    let principal = c.get::<StringArray>(col::PRINCIPAL)?;
    let src_ip = c.get::<StringArray>(col::SRC_IP)?;
    let user_agent = c.get::<StringArray>(col::USER_AGENT)?;
    let device_id = c.get::<StringArray>(col::DEVICE_ID)?;
    let session_id = c.get::<StringArray>(col::SESSION_ID)?;
    let resource = c.get::<StringArray>(col::RESOURCE)?;
    let status = c.get::<UInt16Array>(col::STATUS)?;
    let bytes_out = c.get::<UInt64Array>(col::BYTES_OUT)?;
    let records_out = c.get::<UInt64Array>(col::RECORDS_OUT)?;
    let request_id = c.get::<StringArray>(col::REQUEST_ID)?;
    let country = c.get::<StringArray>(col::COUNTRY)?;
    let city = c.get::<StringArray>(col::CITY)?;
    let lat = c.get::<Float64Array>(col::LAT)?;
    let lon = c.get::<Float64Array>(col::LON)?;
    let accuracy_km = c.get::<UInt16Array>(col::ACCURACY_KM)?;
    let asn = c.get::<UInt32Array>(col::ASN)?;
    let as_org = c.get::<StringArray>(col::AS_ORG)?;

    (0..batch.num_rows())
        .map(|i| {
            if ts.is_null(i) {
                return Err(ColumnsError::BadValue {
                    column: col::TS,
                    row: i,
                    reason: "null in a required column",
                });
            }
            let src_ip = match opt_str(src_ip, i) {
                Some(text) => Some(text.parse::<IpAddr>().map_err(|_| ColumnsError::BadValue {
                    column: col::SRC_IP,
                    row: i,
                    reason: "not an IP address",
                })?),
                None => None,
            };
            Ok(Event {
                ts_ms: ts.value(i),
                token_id: req_str(token_id, i, col::TOKEN_ID)?,
                issuer: req_str(issuer, i, col::ISSUER)?,
                action: req_str(action, i, col::ACTION)?,
                principal: opt_str(principal, i),
                src_ip,
                user_agent: opt_str(user_agent, i),
                device_id: opt_str(device_id, i),
                session_id: opt_str(session_id, i),
                resource: opt_str(resource, i),
                status: opt_prim!(status, i),
                bytes_out: opt_prim!(bytes_out, i),
                records_out: opt_prim!(records_out, i),
                request_id: opt_str(request_id, i),
                country: opt_str(country, i).map(Arc::from),
                city: opt_str(city, i).map(Arc::from),
                lat: opt_prim!(lat, i),
                lon: opt_prim!(lon, i),
                accuracy_km: opt_prim!(accuracy_km, i),
                asn: opt_prim!(asn, i),
                as_org: opt_str(as_org, i).map(Arc::from),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
