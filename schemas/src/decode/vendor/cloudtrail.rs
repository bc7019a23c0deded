//! AWS CloudTrail: one record, a delivered file's `{"Records":[...]}`, or
//! an EventBridge event carrying a record in `detail` (`"detail-type": "AWS
//! API Call via CloudTrail"`).
//!
//! | canonical | CloudTrail |
//! |---|---|
//! | `ts` | `eventTime` |
//! | `token_id` | `userIdentity.accessKeyId` (a record without one is skipped) |
//! | `principal` | `userIdentity.arn`, else `userIdentity.userName` |
//! | `action` | `eventSource` without `.amazonaws.com`, `:`, `eventName` (`s3:GetObject`) |
//! | `src_ip` | `sourceIPAddress` when it is an address (not `AWS Internal`) |
//! | `user_agent` | `userAgent` |
//! | `session_id` | `userIdentity.sessionContext.sessionIssuer.arn` |
//! | `resource` | `resources[0].ARN`, else `requestParameters.bucketName` + `/` + `key` |
//! | `status` | 200 without `errorCode`; 403 for access denials, 404 for not-found, 429 for throttling, else 400 |
//! | `bytes_out` | `additionalEventData.bytesTransferredOut` |
//! | `request_id` | `requestID`, else `eventID` |

use serde_json::Value;

use super::{address, count, one, required, service_action, text, timestamp};
use crate::decode::{DecodeError, Decoded};
use crate::event::Event;

/// The shapes a CloudTrail record arrives in.
pub enum Records<'v> {
    /// One record, bare or in an EventBridge event's `detail`.
    One(&'v Value),
    /// A delivered file's `Records`; each element is decoded on its own.
    File(&'v [Value]),
}

pub fn records(value: &Value) -> Result<Records<'_>, DecodeError> {
    match value.get("Records") {
        Some(Value::Array(records)) => Ok(Records::File(records)),
        Some(_) => Err(DecodeError::WrongType("Records")),
        None => Ok(Records::One(
            match (value.get("detail-type"), value.get("detail")) {
                (Some(Value::String(_)), Some(detail)) => detail,
                _ => value,
            },
        )),
    }
}

/// One record. `None` for a call made with no access key (an
/// `AwsServiceEvent`, an anonymous request): no token to watch.
pub fn decode(r: &Value, issuer: &str) -> Result<Option<Decoded>, DecodeError> {
    if !r.is_object() {
        return Err(DecodeError::NotAnObject);
    }
    let source = required(r, "eventSource")?;
    let name = required(r, "eventName")?;
    let ts = timestamp(r, "eventTime")?;
    let Some(key) = text(r, "userIdentity.accessKeyId")? else {
        return Ok(None);
    };
    let mut e = Event::new(ts, key, issuer, service_action(&source, &name));
    e.principal = text(r, "userIdentity.arn")?.or(text(r, "userIdentity.userName")?);
    e.src_ip = address(r, "sourceIPAddress")?;
    e.user_agent = text(r, "userAgent")?;
    e.session_id = text(r, "userIdentity.sessionContext.sessionIssuer.arn")?;
    e.resource = match r.pointer("/resources/0/ARN") {
        Some(Value::String(arn)) if !arn.is_empty() => Some(arn.clone()),
        _ => match (
            text(r, "requestParameters.bucketName")?,
            text(r, "requestParameters.key")?,
        ) {
            (Some(bucket), Some(key)) => Some(format!("{bucket}/{key}")),
            (bucket, _) => bucket,
        },
    };
    e.status = Some(status(text(r, "errorCode")?.as_deref()));
    e.bytes_out = count(r, "additionalEventData.bytesTransferredOut")?;
    e.request_id = text(r, "requestID")?.or(text(r, "eventID")?);
    Ok(Some(one(e)))
}

/// CloudTrail records an error code, not an HTTP status; this is the
/// status the code stands for.
fn status(error_code: Option<&str>) -> u16 {
    let Some(code) = error_code else { return 200 };
    let lower = code.to_ascii_lowercase();
    if lower.contains("denied") || lower.contains("unauthorized") || lower.contains("forbidden") {
        403
    } else if lower.contains("notfound") || lower.starts_with("nosuch") {
        404
    } else if lower.contains("throttl") || lower.contains("limitexceeded") {
        429
    } else {
        400
    }
}
