//! OCSF API Activity (`class_uid` 6003), as AWS Security Lake and other
//! OCSF producers write it.
//!
//! | canonical | OCSF |
//! |---|---|
//! | `ts` | `time` (epoch ms) |
//! | `token_id` | `actor.user.credential_uid`, else `actor.session.credential_uid`; an activity with neither is skipped |
//! | `principal` | `actor.user.uid`, else `actor.user.name` |
//! | `action` | `api.service.name` and `api.operation` (`s3:GetObject`: `.amazonaws.com` is dropped, as for CloudTrail), else `api.operation` |
//! | `src_ip` | `src_endpoint.ip` |
//! | `user_agent` | `http_request.user_agent` |
//! | `device_id` | `device.uid` |
//! | `session_id` | `actor.session.uid` |
//! | `resource` | `resources[0].uid`, else `resources[0].name` |
//! | `status` | `http_response.code` |
//! | `bytes_out` | `traffic.bytes_out` |
//! | `request_id` | `api.request.uid` |
//!
//! A record of another class is refused (`wrong_kind`).

use serde_json::Value;

use super::{address, count, one, required, service_action, status, text, timestamp};
use crate::decode::{DecodeError, Decoded};
use crate::event::Event;

pub const API_ACTIVITY: u64 = 6003;

/// `None` for an activity with no credential id on the actor.
pub fn decode(v: &Value, issuer: &str) -> Result<Option<Decoded>, DecodeError> {
    match v.get("class_uid") {
        Some(c) if c.as_u64() == Some(API_ACTIVITY) => {}
        Some(_) => return Err(DecodeError::WrongKind("class_uid")),
        None => return Err(DecodeError::MissingField("class_uid")),
    }
    let ts = timestamp(v, "time")?;
    let operation = required(v, "api.operation")?;
    let Some(token) =
        text(v, "actor.user.credential_uid")?.or(text(v, "actor.session.credential_uid")?)
    else {
        return Ok(None);
    };
    let action = match text(v, "api.service.name")? {
        Some(service) => service_action(&service, &operation),
        None => operation,
    };
    let mut e = Event::new(ts, token, issuer, action);
    e.principal = text(v, "actor.user.uid")?.or(text(v, "actor.user.name")?);
    e.src_ip = address(v, "src_endpoint.ip")?;
    e.user_agent = text(v, "http_request.user_agent")?;
    e.device_id = text(v, "device.uid")?;
    e.session_id = text(v, "actor.session.uid")?;
    e.resource = match v.pointer("/resources/0") {
        Some(r) if r.is_object() => text(r, "uid")?.or(text(r, "name")?),
        _ => None,
    };
    e.status = status(v, "http_response.code")?;
    e.bytes_out = count(v, "traffic.bytes_out")?;
    e.request_id = text(v, "api.request.uid")?;
    Ok(Some(one(e)))
}
