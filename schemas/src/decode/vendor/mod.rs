//! Vendor formats: each maps one vendor record into the canonical event.
//! They read a parsed `serde_json::Value` (the record has already passed
//! the size, UTF-8 and structure [`Limits`](super::Limits)), so a field
//! is looked up by its documented path.
//!
//! - [`cloudtrail`]: AWS CloudTrail, single records or `{"Records":[...]}`.
//! - [`github`]: GitHub audit-log events.
//! - [`k8s`]: Kubernetes `audit.k8s.io/v1` `Event`.
//! - [`ocsf`]: OCSF API Activity (class 6003).
//! - [`okta`]: Okta System Log events.

pub mod cloudtrail;
pub mod github;
pub mod k8s;
pub mod ocsf;
pub mod okta;

use std::net::IpAddr;

use serde_json::Value;

use super::{DecodeError, Decoded};
use crate::event::Event;
use crate::time;

/// Parses a record; syntax errors and a non-object top level are refused.
pub(super) fn parse(text: &str) -> Result<Value, DecodeError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        if e.to_string().starts_with("number out of range") {
            DecodeError::OutOfRange("number")
        } else {
            DecodeError::InvalidJson
        }
    })?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(DecodeError::NotAnObject)
    }
}

/// The value at a dotted path (keys only; `path` is static for errors).
fn at<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, |v, key| v.get(key))
}

/// A string field; absent, null or empty is `None`, another type an error.
fn text(v: &Value, path: &'static str) -> Result<Option<String>, DecodeError> {
    match at(v, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(DecodeError::WrongType(path)),
    }
}

fn required(v: &Value, path: &'static str) -> Result<String, DecodeError> {
    text(v, path)?.ok_or(DecodeError::MissingField(path))
}

/// A string or a number, as text (ids that vendors send either way).
fn id(v: &Value, path: &'static str) -> Result<Option<String>, DecodeError> {
    match at(v, path) {
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        _ => text(v, path),
    }
}

/// A non-negative whole number (integers, or floats with no fraction, as
/// CloudTrail writes byte counts).
fn count(v: &Value, path: &'static str) -> Result<Option<u64>, DecodeError> {
    match at(v, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                return Ok(Some(u));
            }
            match n.as_f64() {
                Some(f) if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => {
                    Ok(Some(f as u64))
                }
                _ => Err(DecodeError::OutOfRange(path)),
            }
        }
        Some(_) => Err(DecodeError::WrongType(path)),
    }
}

/// An HTTP status code field.
fn status(v: &Value, path: &'static str) -> Result<Option<u16>, DecodeError> {
    count(v, path)?
        .map(|c| u16::try_from(c).map_err(|_| DecodeError::OutOfRange(path)))
        .transpose()
}

/// A timestamp: RFC 3339 text or epoch milliseconds.
fn timestamp(v: &Value, path: &'static str) -> Result<i64, DecodeError> {
    let ms = match at(v, path) {
        None | Some(Value::Null) => return Err(DecodeError::MissingField(path)),
        Some(Value::String(s)) => time::parse_rfc3339_ms(s),
        Some(Value::Number(n)) => n.as_i64().and_then(time::in_range),
        Some(_) => None,
    };
    ms.ok_or(DecodeError::InvalidTimestamp)
}

/// An address field. Vendors put service names where there was no client
/// address (CloudTrail: `s3.amazonaws.com`, `AWS Internal`); those are no
/// address, not an error.
fn address(v: &Value, path: &'static str) -> Result<Option<IpAddr>, DecodeError> {
    Ok(text(v, path)?.and_then(|s| s.parse().ok()))
}

/// `service:operation`, with AWS's `.amazonaws.com` dropped so actions
/// read as IAM actions (`s3:GetObject`) and match scopes written that way.
fn service_action(service: &str, operation: &str) -> String {
    let service = service.strip_suffix(".amazonaws.com").unwrap_or(service);
    format!("{service}:{operation}")
}

fn one(event: Event) -> Decoded {
    Decoded {
        event,
        secret: None,
    }
}

#[cfg(test)]
mod tests;
