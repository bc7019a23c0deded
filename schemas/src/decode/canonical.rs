//! The `canonical` JSON format: one object per record, with the field names
//! of [`Event`]. `ts` is RFC 3339 or integer epoch milliseconds. Instead of
//! `token_id`, a source may send the raw secret as `token`; it is replaced by
//! its fingerprint here and never stored in the event. Unknown fields are
//! ignored, so producers can add their own.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{DecodeError, Decoded, Limits, Secret};
use crate::event::Event;
use crate::fingerprint::Fingerprinter;
use crate::time;

/// Decodes one canonical JSON record (already checked for size and UTF-8)
/// with the default [`Limits`].
pub fn decode(text: &str, fingerprinter: &Fingerprinter) -> Result<Decoded, DecodeError> {
    decode_with(text, fingerprinter, &Limits::default())
}

/// Decodes one canonical JSON record. The known fields are scalars, so
/// nesting can only hide in unknown fields: they are skipped without
/// allocating, counting depth and array lengths against `limits` on the
/// way, which costs nothing for records that have none (no pass of its own
/// over the bytes, unlike the vendor formats).
pub fn decode_with(
    text: &str,
    fingerprinter: &Fingerprinter,
    limits: &Limits,
) -> Result<Decoded, DecodeError> {
    let current = Cell::new(None);
    let violation = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = WireSeed {
        current: &current,
        skip: Skip {
            depth: 1,
            limits,
            violation: &violation,
        },
    };
    let wire = seed.deserialize(&mut de).and_then(|w| de.end().map(|()| w));
    let wire = match wire {
        Ok(wire) => wire?,
        Err(e) => {
            return Err(violation
                .get()
                .unwrap_or_else(|| classify(&e, current.get())));
        }
    };
    wire.into_decoded(fingerprinter)
}

/// Skips an unknown field's value, enforcing the structural limits.
#[derive(Clone, Copy)]
struct Skip<'a> {
    /// Depth of the value being skipped (the record itself is 1).
    depth: usize,
    limits: &'a Limits,
    violation: &'a Cell<Option<DecodeError>>,
}

impl Skip<'_> {
    fn deeper<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= self.limits.max_depth {
            return Err(self.fail(DecodeError::TooDeep));
        }
        Ok(Skip {
            depth: self.depth + 1,
            ..self
        })
    }

    fn fail<E: de::Error>(self, e: DecodeError) -> E {
        self.violation.set(Some(e));
        E::custom(e)
    }
}

impl<'de> DeserializeSeed<'de> for Skip<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        let mut items = 0;
        while seq.next_element_seed(inner)?.is_some() {
            items += 1;
            if items > self.limits.max_array_items {
                return Err(self.fail(DecodeError::TooManyItems));
            }
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

fn classify(e: &serde_json::Error, field: Option<&'static str>) -> DecodeError {
    match (e.classify(), field) {
        // serde_json's own guard, past a `max_depth` above 127.
        _ if e.to_string().starts_with("recursion limit exceeded") => DecodeError::TooDeep,
        _ if e.to_string().starts_with("number out of range") => {
            DecodeError::OutOfRange(field.unwrap_or("number"))
        }
        (serde_json::error::Category::Data, Some("ts")) => DecodeError::InvalidTimestamp,
        (serde_json::error::Category::Data, Some(field)) if out_of_range(e) => {
            DecodeError::OutOfRange(field)
        }
        (serde_json::error::Category::Data, Some(field)) => DecodeError::WrongType(field),
        (serde_json::error::Category::Data, None) => DecodeError::NotAnObject,
        _ => DecodeError::InvalidJson,
    }
}

/// Whether serde's message is about a whole number that does not fit:
/// `70000` or `-1` for a u16 or u64 ("invalid value: integer"), or an
/// integer past u64 that serde_json read as a float.
fn out_of_range(e: &serde_json::Error) -> bool {
    let text = e.to_string();
    if text.starts_with("invalid value: integer") {
        return true;
    }
    let float = text
        .strip_prefix("invalid type: floating point `")
        .and_then(|rest| rest.split('`').next())
        .and_then(|n| n.parse::<f64>().ok());
    float.is_some_and(|f| f.fract() == 0.0 && f.abs() >= u64::MAX as f64)
}

/// A string that borrows from the input when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// `ts` as sent: text to parse or a millisecond count.
enum Ts<'a> {
    Text(Text<'a>),
    Millis(i64),
    OutOfRange,
}

impl<'de> de::Deserialize<'de> for Ts<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ts<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 string or integer epoch milliseconds")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Ts::Text(Text(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Ts::Text(Text(Cow::Owned(v.to_owned()))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Ts::Millis(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(Ts::OutOfRange, Ts::Millis))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Default)]
struct Wire<'a> {
    ts: Option<Ts<'a>>,
    token_id: Option<Text<'a>>,
    token: Option<Text<'a>>,
    issuer: Option<Text<'a>>,
    action: Option<Text<'a>>,
    principal: Option<Text<'a>>,
    src_ip: Option<Text<'a>>,
    user_agent: Option<Text<'a>>,
    device_id: Option<Text<'a>>,
    session_id: Option<Text<'a>>,
    resource: Option<Text<'a>>,
    status: Option<u16>,
    bytes_out: Option<u64>,
    records_out: Option<u64>,
    request_id: Option<Text<'a>>,
    country: Option<Text<'a>>,
    city: Option<Text<'a>>,
    lat: Option<f64>,
    lon: Option<f64>,
    accuracy_km: Option<u16>,
    asn: Option<u32>,
    as_org: Option<Text<'a>>,
}

/// Deserializes a [`Wire`], recording in `current` the field being read, so
/// a type error can name it.
struct WireSeed<'c> {
    current: &'c Cell<Option<&'static str>>,
    skip: Skip<'c>,
}

impl<'de> DeserializeSeed<'de> for WireSeed<'_> {
    /// A duplicate field is reported as a value, not a serde error, so it
    /// keeps its own reason.
    type Value = Result<Wire<'de>, DecodeError>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for WireSeed<'_> {
    type Value = Result<Wire<'de>, DecodeError>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut w = Wire::default();
        macro_rules! fields {
            ($key:expr; $($name:ident),* $(,)?) => {
                match $key {
                    $(stringify!($name) => {
                        self.current.set(Some(stringify!($name)));
                        let value = map.next_value()?;
                        if w.$name.is_some() {
                            return Ok(Err(DecodeError::DuplicateField(stringify!($name))));
                        }
                        w.$name = value;
                    })*
                    _ => {
                        self.current.set(None);
                        map.next_value_seed(self.skip)?;
                    }
                }
            };
        }
        while let Some(key) = map.next_key::<Text<'de>>()? {
            fields!(key.0.as_ref();
                ts, token_id, token, issuer, action, principal, src_ip, user_agent, device_id,
                session_id, resource, status, bytes_out, records_out, request_id, country, city,
                lat, lon, accuracy_km, asn, as_org);
        }
        self.current.set(None);
        Ok(Ok(w))
    }
}

fn optional(text: Option<Text<'_>>) -> Option<String> {
    text.map(|t| t.0.into_owned()).filter(|s| !s.is_empty())
}

fn required(text: Option<Text<'_>>, field: &'static str) -> Result<String, DecodeError> {
    optional(text).ok_or(DecodeError::MissingField(field))
}

impl Wire<'_> {
    fn into_decoded(self, fingerprinter: &Fingerprinter) -> Result<Decoded, DecodeError> {
        let ts_ms = match self.ts {
            None => return Err(DecodeError::MissingField("ts")),
            Some(Ts::Millis(ms)) => time::in_range(ms),
            Some(Ts::Text(t)) => time::parse_rfc3339_ms(&t.0),
            Some(Ts::OutOfRange) => None,
        }
        .ok_or(DecodeError::InvalidTimestamp)?;
        let secret = optional(self.token).map(Secret::new);
        let token_id = match (optional(self.token_id), &secret) {
            (Some(id), _) => id,
            (None, Some(secret)) => fingerprinter.fingerprint(secret.expose()),
            (None, None) => return Err(DecodeError::MissingField("token_id")),
        };
        let src_ip = match optional(self.src_ip) {
            Some(text) => Some(text.parse::<IpAddr>().map_err(|_| DecodeError::InvalidIp)?),
            None => None,
        };
        let finite = |v: Option<f64>, field| match v {
            Some(x) if !x.is_finite() => Err(DecodeError::WrongType(field)),
            v => Ok(v),
        };
        let event = Event {
            ts_ms,
            token_id,
            issuer: required(self.issuer, "issuer")?,
            action: required(self.action, "action")?,
            principal: optional(self.principal),
            src_ip,
            user_agent: optional(self.user_agent),
            device_id: optional(self.device_id),
            session_id: optional(self.session_id),
            resource: optional(self.resource),
            status: self.status,
            bytes_out: self.bytes_out,
            records_out: self.records_out,
            request_id: optional(self.request_id),
            country: optional(self.country).map(Arc::from),
            city: optional(self.city).map(Arc::from),
            lat: finite(self.lat, "lat")?,
            lon: finite(self.lon, "lon")?,
            accuracy_km: self.accuracy_km,
            asn: self.asn,
            as_org: optional(self.as_org).map(Arc::from),
        };
        Ok(Decoded { event, secret })
    }
}

#[cfg(test)]
mod tests;
