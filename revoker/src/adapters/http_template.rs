//! A templated HTTP call for issuers without a dedicated adapter.

use std::collections::BTreeMap;

use super::{AdapterError, Attempt, RevokeRequest, env, send};
use crate::config::IssuerConfig;

/// Where a template value goes, which decides how it is escaped, so that
/// no value (a token id, a principal, a reason: all from input) can add a
/// path segment, a query or form field, a JSON member or a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// A URL path: everything but unreserved characters is percent-encoded,
    /// `/` and `.` included (no new segment, no `..`).
    Path,
    /// A URL query or a form body: `application/x-www-form-urlencoded`.
    Form,
    /// Inside a JSON string.
    Json,
    /// As it is (a header value, checked for validity afterwards; a plain
    /// text body).
    Raw,
}

/// Renders a URL template: the path with [`Context::Path`], the query and
/// fragment with [`Context::Form`]. Refuses (naming the placeholder) a path
/// value of `.` or `..`: URL parsers (WHATWG, so reqwest's) read it, even
/// percent-encoded, as a dot segment, and would call another path.
pub fn render_url(template: &str, values: &[(&str, &str)]) -> Result<String, String> {
    let path = &template[..template.find(['?', '#']).unwrap_or(template.len())];
    if let Some((name, value)) = values
        .iter()
        .find(|(name, value)| matches!(*value, "." | "..") && path.contains(&format!("{{{name}}}")))
    {
        return Err(format!(
            "{{{name}}} is {value:?}, which a URL path cannot hold (it is read as a dot segment)"
        ));
    }
    Ok(render(path, values, Context::Path)
        + &render(&template[path.len()..], values, Context::Form))
}

fn percent_encode_path(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Replaces `{name}` placeholders with `values`, escaped for `context`.
/// Unknown placeholders are left as they are.
pub fn render(template: &str, values: &[(&str, &str)], context: Context) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}').map(|close| (&after[..close], close)) {
            Some((name, close)) if values.iter().any(|(k, _)| *k == name) => {
                let value = values
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map_or("", |(_, v)| *v);
                match context {
                    Context::Path => percent_encode_path(value, &mut out),
                    Context::Form => {
                        out.extend(url::form_urlencoded::byte_serialize(value.as_bytes()))
                    }
                    Context::Json => {
                        let quoted = serde_json::to_string(value).unwrap_or_default();
                        out.push_str(&quoted[1..quoted.len() - 1]);
                    }
                    Context::Raw => out.push_str(value),
                }
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

pub struct HttpAdapter {
    method: reqwest::Method,
    url: String,
    headers: BTreeMap<String, String>,
    secret_headers: Vec<(String, String)>,
    body: Option<String>,
    client: reqwest::Client,
}

impl HttpAdapter {
    pub fn build(
        name: &str,
        config: &IssuerConfig,
        client: reqwest::Client,
    ) -> Result<Self, AdapterError> {
        let IssuerConfig::Http {
            method,
            url,
            headers,
            headers_from_env,
            body,
        } = config
        else {
            unreachable!("dispatched by kind")
        };
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| AdapterError {
            issuer: name.into(),
            reason: format!("{method:?} is not an HTTP method"),
        })?;
        let mut secret_headers = Vec::new();
        for (header, var) in headers_from_env {
            secret_headers.push((header.clone(), env(name, var)?));
        }
        Ok(HttpAdapter {
            method,
            url: url.clone(),
            headers: headers.clone(),
            secret_headers,
            body: body.clone(),
            client,
        })
    }

    /// Whether the request template uses the raw secret.
    pub fn needs_secret(&self) -> bool {
        self.url.contains("{secret}")
            || self.body.as_deref().is_some_and(|b| b.contains("{secret}"))
            || self.headers.values().any(|v| v.contains("{secret}"))
    }

    pub async fn revoke(&self, req: &RevokeRequest) -> Attempt {
        if self.needs_secret() && req.secret.is_none() {
            return Attempt::NeedsSecret(
                "the request template uses {secret} and no raw secret is held".into(),
            );
        }
        let secret = req.secret.as_ref().map_or("", |s| s.expose());
        let values = [
            ("token_id", req.token_id.as_str()),
            ("issuer", req.issuer.as_str()),
            ("principal", req.principal.as_deref().unwrap_or("")),
            ("decision_id", req.decision_id.as_str()),
            ("reason", req.reason.as_str()),
            ("secret", secret),
        ];
        let url = match render_url(&self.url, &values) {
            Ok(url) => url,
            Err(why) => {
                return Attempt::Failed(format!(
                    "the request URL cannot be built: {why}; revoke this token at the issuer by hand"
                ));
            }
        };
        let mut r = self.client.request(self.method.clone(), url);
        let mut content_type = None;
        let mut idempotency_key = false;
        for (name, value) in &self.headers {
            let value = render(value, &values, Context::Raw);
            let Ok(value) = reqwest::header::HeaderValue::from_str(&value) else {
                return Attempt::Failed(format!(
                    "header {name} would not be a valid header value (a line break or control character from a template value)"
                ));
            };
            if name.eq_ignore_ascii_case("content-type") {
                content_type = value.to_str().ok().map(str::to_ascii_lowercase);
            }
            idempotency_key |= name.eq_ignore_ascii_case("idempotency-key");
            r = r.header(name, value);
        }
        if !idempotency_key {
            // One key per decision: an issuer that honours it (the IETF
            // draft, Stripe-style APIs) acts once however often we retry.
            r = r.header("Idempotency-Key", req.decision_id.as_str());
        }
        for (name, value) in &self.secret_headers {
            r = r.header(name, value);
        }
        if let Some(body) = &self.body {
            r = r.body(render(
                body,
                &values,
                body_context(body, content_type.as_deref()),
            ));
        }
        send(r).await
    }
}

/// How a body template's values are escaped: by its content type, else by
/// its look (`{...}` is JSON, `a=b` is a form).
fn body_context(body: &str, content_type: Option<&str>) -> Context {
    match content_type {
        Some(t) if t.contains("json") => Context::Json,
        Some(t) if t.contains("x-www-form-urlencoded") => Context::Form,
        Some(_) => Context::Raw,
        None if body.trim_start().starts_with(['{', '[']) => Context::Json,
        None if body.contains('=') => Context::Form,
        None => Context::Raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn renders_and_escapes_per_context() {
        let v = [("token_id", "a b/\"c\""), ("issuer", "x&y")];
        assert_eq!(
            render_url("/t/{token_id}?i={issuer}", &v).unwrap(),
            "/t/a%20b%2F%22c%22?i=x%26y"
        );
        assert_eq!(
            render_url("/t/{token_id}", &[("token_id", "a..")]).unwrap(),
            "/t/a%2E%2E"
        );
        // A dot segment, even percent-encoded, would move up a level.
        for dots in [".", ".."] {
            assert!(render_url("/t/{token_id}", &[("token_id", dots)]).is_err());
            assert!(render_url("/t?id={token_id}", &[("token_id", dots)]).is_ok());
        }
        assert_eq!(
            render(r#"{"id":"{token_id}"}"#, &v, Context::Json),
            r#"{"id":"a b/\"c\""}"#
        );
        assert_eq!(
            render("{unknown} {issuer} {", &v, Context::Raw),
            "{unknown} x&y {"
        );
    }

    proptest! {
        /// No template value can add a path segment, a query or form field,
        /// or a JSON member, whatever it holds.
        #[test]
        fn values_stay_inside_their_slot(
            token_id in ".{0,24}",
            principal in ".{0,24}",
            reason in ".{0,24}",
        ) {
            let v = [("token_id", token_id.as_str()), ("principal", principal.as_str()), ("reason", reason.as_str())];
            let rendered = render_url("http://issuer.test/revoke/{token_id}?user={principal}", &v);
            if matches!(token_id.as_str(), "." | "..") {
                prop_assert!(rendered.is_err());
                return Ok(());
            }
            let url = url::Url::parse(&rendered.unwrap()).unwrap();
            let segments: Vec<String> = url
                .path_segments()
                .unwrap()
                .map(percent_decode)
                .collect();
            prop_assert_eq!(segments, vec!["revoke".to_string(), token_id.clone()]);
            let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
            prop_assert_eq!(query, vec![("user".to_string(), principal.clone())]);

            let form = render("token={token_id}&reason={reason}", &v, body_context("token=x", None));
            let fields: Vec<(String, String)> = url::form_urlencoded::parse(form.as_bytes()).into_owned().collect();
            prop_assert_eq!(fields, vec![("token".to_string(), token_id.clone()), ("reason".to_string(), reason.clone())]);

            let json = render(r#"{"id":"{token_id}","why":"{reason}"}"#, &v, body_context("{", None));
            let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(parsed.len(), 2);
            prop_assert_eq!(parsed["id"].as_str(), Some(token_id.as_str()));
            prop_assert_eq!(parsed["why"].as_str(), Some(reason.as_str()));

            // A header value that would carry a line break is refused.
            let header = render("Bearer {principal}", &v, Context::Raw);
            if let Ok(h) = reqwest::header::HeaderValue::from_str(&header) {
                prop_assert!(!h.as_bytes().iter().any(|b| *b == b'\r' || *b == b'\n'));
            }
        }
    }

    fn percent_decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }
}
