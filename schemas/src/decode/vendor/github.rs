//! GitHub audit-log events (the audit log API and streaming).
//!
//! | canonical | GitHub |
//! |---|---|
//! | `ts` | `@timestamp`, else `created_at` (epoch ms) |
//! | `token_id` | `token_id`, else `hashed_token` (an event with neither, made in a web session, is skipped) |
//! | `principal` | `actor` |
//! | `action` | `action` (`repo.download_zip`, `git.clone`) |
//! | `src_ip` | `actor_ip` |
//! | `user_agent` | `user_agent` |
//! | `device_id` | `programmatic_access_type` (`Personal access token (classic)`, `OAuth access token`, ...) |
//! | `resource` | `repo`, else `repository`, else `org` |
//! | `request_id` | `request_id`, else `_document_id` |
//!
//! `hashed_token` is GitHub's SHA-256 of the token, never the token itself.

use serde_json::Value;

use super::{address, id, one, required, text, timestamp};
use crate::decode::{DecodeError, Decoded};
use crate::event::Event;

/// `None` for an event made with no token (a web-session action).
pub fn decode(v: &Value, issuer: &str) -> Result<Option<Decoded>, DecodeError> {
    let ts = if v.get("@timestamp").is_some() {
        timestamp(v, "@timestamp")?
    } else {
        timestamp(v, "created_at")?
    };
    let action = required(v, "action")?;
    let Some(token) = id(v, "token_id")?.or(text(v, "hashed_token")?) else {
        return Ok(None);
    };
    let mut e = Event::new(ts, token, issuer, action);
    e.principal = text(v, "actor")?;
    e.src_ip = address(v, "actor_ip")?;
    e.user_agent = text(v, "user_agent")?;
    e.device_id = text(v, "programmatic_access_type")?;
    e.resource = text(v, "repo")?
        .or(text(v, "repository")?)
        .or(text(v, "org")?);
    e.request_id = text(v, "request_id")?.or(text(v, "_document_id")?);
    Ok(Some(one(e)))
}
