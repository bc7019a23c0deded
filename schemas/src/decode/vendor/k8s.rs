//! Kubernetes audit events (`audit.k8s.io/v1`, kind `Event`).
//!
//! | canonical | Kubernetes |
//! |---|---|
//! | `ts` | `requestReceivedTimestamp`, else `stageTimestamp` |
//! | `token_id` | `user.extra["authentication.kubernetes.io/credential-id"][0]` (`JTI=...`, bound service-account tokens), else `user.username`; a `system:anonymous` request is skipped |
//! | `principal` | `user.username` |
//! | `action` | `verb` and `objectRef.resource[/subresource]` (`get secrets`), else `verb` and `requestURI` |
//! | `src_ip` | `sourceIPs[0]` |
//! | `user_agent` | `userAgent` |
//! | `resource` | `requestURI` |
//! | `status` | `responseStatus.code` |
//! | `request_id` | `auditID` |

use serde_json::Value;

use super::{one, required, status, text, timestamp};
use crate::decode::{DecodeError, Decoded};
use crate::event::Event;

const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";
/// The user an unauthenticated request runs as.
const ANONYMOUS: &str = "system:anonymous";

/// `None` for a request with no credential (`system:anonymous`).
pub fn decode(v: &Value, issuer: &str) -> Result<Option<Decoded>, DecodeError> {
    if let Some(kind) = v.get("kind")
        && kind != "Event"
    {
        return Err(DecodeError::WrongKind("kind"));
    }
    let ts = if v.get("requestReceivedTimestamp").is_some() {
        timestamp(v, "requestReceivedTimestamp")?
    } else {
        timestamp(v, "stageTimestamp")?
    };
    let username = text(v, "user.username")?;
    let credential = match v.pointer("/user/extra").and_then(|x| x.get(CREDENTIAL_ID)) {
        None | Some(Value::Null) => None,
        Some(Value::Array(ids)) => match ids.first() {
            Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
            None => None,
            Some(_) => return Err(DecodeError::WrongType("user.extra.credential-id")),
        },
        Some(_) => return Err(DecodeError::WrongType("user.extra.credential-id")),
    };
    let verb = required(v, "verb")?;
    let anonymous = username.as_deref().is_none_or(|u| u == ANONYMOUS);
    let Some(token) = credential.or_else(|| username.clone().filter(|_| !anonymous)) else {
        return Ok(None);
    };
    let uri = text(v, "requestURI")?;
    let action = match (
        text(v, "objectRef.resource")?,
        text(v, "objectRef.subresource")?,
    ) {
        (Some(resource), Some(sub)) => format!("{verb} {resource}/{sub}"),
        (Some(resource), None) => format!("{verb} {resource}"),
        (None, _) => format!("{verb} {}", uri.as_deref().unwrap_or("")),
    };
    let mut e = Event::new(ts, token, issuer, action);
    e.principal = username;
    e.src_ip = match v.pointer("/sourceIPs/0") {
        Some(Value::String(ip)) => ip.parse().ok(),
        Some(Value::Null) | None => None,
        Some(_) => return Err(DecodeError::WrongType("sourceIPs")),
    };
    e.user_agent = text(v, "userAgent")?;
    e.resource = uri;
    e.status = status(v, "responseStatus.code")?;
    e.request_id = text(v, "auditID")?;
    Ok(Some(one(e)))
}
