//! A templated HTTP call for issuers without a dedicated adapter.

use std::collections::BTreeMap;

use super::{AdapterError, Attempt, RevokeRequest, env, send};
use crate::config::IssuerConfig;

/// Where a template value goes, which decides how it is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Url,
    Json,
    Raw,
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
                    Context::Url => {
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
        let url = render(&self.url, &values, Context::Url);
        let mut r = self.client.request(self.method.clone(), url);
        let mut json_body = false;
        for (name, value) in &self.headers {
            let value = render(value, &values, Context::Raw);
            if value.contains(['\r', '\n']) {
                return Attempt::Failed(format!("header {name} would contain a line break"));
            }
            json_body |= name.eq_ignore_ascii_case("content-type") && value.contains("json");
            r = r.header(name, value);
        }
        for (name, value) in &self.secret_headers {
            r = r.header(name, value);
        }
        if let Some(body) = &self.body {
            let context = if json_body || body.trim_start().starts_with('{') {
                Context::Json
            } else {
                Context::Raw
            };
            r = r.body(render(body, &values, context));
        }
        send(r).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_escapes_per_context() {
        let v = [("token_id", "a b/\"c\""), ("issuer", "x")];
        assert_eq!(
            render("/t/{token_id}?i={issuer}", &v, Context::Url),
            "/t/a+b%2F%22c%22?i=x"
        );
        assert_eq!(
            render(r#"{"id":"{token_id}"}"#, &v, Context::Json),
            r#"{"id":"a b/\"c\""}"#
        );
        assert_eq!(
            render("{unknown} {issuer} {", &v, Context::Raw),
            "{unknown} x {"
        );
    }
}
