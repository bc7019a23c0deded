//! Okta System Log events.
//!
//! | canonical | Okta |
//! |---|---|
//! | `ts` | `published` |
//! | `token_id` | `transaction.detail.requestApiTokenId` (API tokens), else `authenticationContext.externalSessionId`; an event with neither is skipped |
//! | `principal` | `actor.alternateId`, else `actor.id` |
//! | `action` | `eventType` (`user.session.start`, `system.api_token.create`) |
//! | `src_ip` | `client.ipAddress` |
//! | `user_agent` | `client.userAgent.rawUserAgent` |
//! | `device_id` | `client.device` |
//! | `session_id` | `authenticationContext.externalSessionId` |
//! | `resource` | `target[0].alternateId`, else `target[0].id` |
//! | `status` | `outcome.result`: SUCCESS 200, DENY 403, FAILURE 400 |
//! | `request_id` | `uuid` |

use serde_json::Value;

use super::{address, one, required, text, timestamp};
use crate::decode::{DecodeError, Decoded};
use crate::event::Event;

/// `None` for an event with neither an API token nor a session (a
/// system event).
pub fn decode(v: &Value, issuer: &str) -> Result<Option<Decoded>, DecodeError> {
    let ts = timestamp(v, "published")?;
    let action = required(v, "eventType")?;
    let session = text(v, "authenticationContext.externalSessionId")?;
    let Some(token) = text(v, "transaction.detail.requestApiTokenId")?.or_else(|| session.clone())
    else {
        return Ok(None);
    };
    let mut e = Event::new(ts, token, issuer, action);
    e.principal = text(v, "actor.alternateId")?.or(text(v, "actor.id")?);
    e.src_ip = address(v, "client.ipAddress")?;
    e.user_agent = text(v, "client.userAgent.rawUserAgent")?;
    e.device_id = text(v, "client.device")?;
    e.session_id = session;
    e.resource = match v.pointer("/target/0") {
        Some(t) if t.is_object() => text(t, "alternateId")?.or(text(t, "id")?),
        _ => None,
    };
    e.status = match text(v, "outcome.result")?.as_deref() {
        Some("SUCCESS") | Some("ALLOW") => Some(200),
        Some("DENY") => Some(403),
        Some("FAILURE") => Some(400),
        _ => None,
    };
    e.request_id = text(v, "uuid")?;
    Ok(Some(one(e)))
}
