//! RFC 7009 token revocation, with optional RFC 7662 introspection to
//! confirm: a 200 from a revocation endpoint proves nothing by itself
//! (RFC 7009 §2.2 answers 200 even for tokens it does not know).

use url::Url;

use super::{AdapterError, Attempt, RevokeRequest, env, send};
use crate::config::{ClientAuth, IssuerConfig};

pub struct Oauth2 {
    pub(super) revocation_url: Url,
    introspection_url: Option<Url>,
    client_id: String,
    client_secret: String,
    client_auth: ClientAuth,
    token_type_hint: Option<String>,
    client: reqwest::Client,
}

impl Oauth2 {
    pub fn build(
        name: &str,
        config: &IssuerConfig,
        client: reqwest::Client,
    ) -> Result<Self, AdapterError> {
        let IssuerConfig::Oauth2 {
            revocation_url,
            client_id,
            client_secret_env,
            client_auth,
            token_type_hint,
            introspection_url,
        } = config
        else {
            unreachable!("dispatched by kind")
        };
        Ok(Oauth2 {
            revocation_url: revocation_url.clone(),
            introspection_url: introspection_url.clone(),
            client_id: client_id.clone(),
            client_secret: env(name, client_secret_env)?,
            client_auth: *client_auth,
            token_type_hint: token_type_hint.clone(),
            client,
        })
    }

    fn post(&self, url: &Url, mut form: Vec<(&str, String)>) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .post(url.clone())
            .header("accept", "application/json");
        match self.client_auth {
            // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic.
            ClientAuth::ClientSecretBasic => {
                let id = url::form_urlencoded::byte_serialize(self.client_id.as_bytes())
                    .collect::<String>();
                let secret = url::form_urlencoded::byte_serialize(self.client_secret.as_bytes())
                    .collect::<String>();
                req = req.basic_auth(id, Some(secret));
            }
            ClientAuth::ClientSecretPost => {
                form.push(("client_id", self.client_id.clone()));
                form.push(("client_secret", self.client_secret.clone()));
            }
        }
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        req.header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }

    pub async fn revoke(&self, req: &RevokeRequest) -> Attempt {
        let Some(secret) = &req.secret else {
            return Attempt::NeedsSecret(
                "RFC 7009 needs the raw token and none is held for it".into(),
            );
        };
        let mut form = vec![("token", secret.expose().to_string())];
        if let Some(hint) = &self.token_type_hint {
            form.push(("token_type_hint", hint.clone()));
        }
        let revoked = send(self.post(&self.revocation_url, form)).await;
        if revoked != Attempt::Revoked {
            return revoked;
        }
        let Some(introspect) = &self.introspection_url else {
            return Attempt::Revoked;
        };
        let resp = match self
            .post(introspect, vec![("token", secret.expose().to_string())])
            .send()
            .await
        {
            Ok(resp) if resp.status().is_success() => resp,
            Ok(resp) => {
                return Attempt::Retry {
                    reason: format!("introspection answered HTTP {}", resp.status()),
                    after: None,
                };
            }
            Err(e) => return super::transport(e),
        };
        match resp
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v.get("active").and_then(|a| a.as_bool()))
        {
            Some(false) => Attempt::Revoked,
            Some(true) => Attempt::Retry {
                reason: "revocation answered 200 but introspection says the token is still active"
                    .into(),
                after: None,
            },
            None => Attempt::Retry {
                reason: "introspection answer has no boolean `active`".into(),
                after: None,
            },
        }
    }
}
