//! The canonical API-call event (SPEC §3): what every input format decodes
//! into and what every detector reads.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use crate::time::format_rfc3339_ms;

/// One API call made with one token.
///
/// `token_id` is never a secret: it is a key id, a jti, an access key id or
/// the [`Fingerprinter`](crate::Fingerprinter) output for a raw secret.
/// The enrichment fields (`country` to `as_org`) are empty until the GeoIP
/// stage fills them; their strings are shared with the GeoIP cache, so
/// enriching an event copies no text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Event time, UTC milliseconds since the epoch. Serialized as RFC 3339.
    #[serde(rename = "ts", serialize_with = "ser_ts")]
    pub ts_ms: i64,
    /// Stable, non-secret token identifier.
    pub token_id: String,
    /// The system that minted the token; selects the revocation adapter.
    pub issuer: String,
    /// The operation, e.g. `GET /v1/orders/{id}` or `s3:GetObject`.
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_out: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// ISO 3166-1 alpha-2 country of `src_ip` (enrichment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    /// GeoIP accuracy radius in kilometres (enrichment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_km: Option<u16>,
    /// Autonomous system number of `src_ip` (enrichment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_org: Option<Arc<str>>,
}

fn ser_ts<S: Serializer>(ts_ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_rfc3339_ms(*ts_ms))
}

impl Event {
    /// An event with the required fields set and everything else empty.
    pub fn new(
        ts_ms: i64,
        token_id: impl Into<String>,
        issuer: impl Into<String>,
        action: impl Into<String>,
    ) -> Self {
        Event {
            ts_ms,
            token_id: token_id.into(),
            issuer: issuer.into(),
            action: action.into(),
            principal: None,
            src_ip: None,
            user_agent: None,
            device_id: None,
            session_id: None,
            resource: None,
            status: None,
            bytes_out: None,
            records_out: None,
            request_id: None,
            country: None,
            city: None,
            lat: None,
            lon: None,
            accuracy_km: None,
            asn: None,
            as_org: None,
        }
    }

    /// Serializes to the canonical JSON form, which
    /// [`decode::canonical`](crate::decode::canonical) reads back.
    pub fn to_json(&self) -> String {
        // Serializing this struct cannot fail: every field is a string, a
        // number or an IP address, and floats come from GeoIP (finite).
        serde_json::to_string(self).unwrap_or_default()
    }
}
