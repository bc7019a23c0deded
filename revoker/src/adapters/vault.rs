//! HashiCorp Vault: `POST /v1/auth/token/revoke-accessor` with the token's
//! accessor (the `token_id`), authenticated by `X-Vault-Token`.

use url::Url;

use super::{AdapterError, Attempt, RevokeRequest, env, send};
use crate::config::IssuerConfig;

pub struct Vault {
    pub(super) url: Url,
    token: String,
    namespace: Option<String>,
    client: reqwest::Client,
}

impl Vault {
    pub fn build(
        name: &str,
        config: &IssuerConfig,
        client: reqwest::Client,
    ) -> Result<Self, AdapterError> {
        let IssuerConfig::Vault {
            address,
            token_env,
            namespace,
        } = config
        else {
            unreachable!("dispatched by kind")
        };
        let url = address
            .join("v1/auth/token/revoke-accessor")
            .map_err(|e| AdapterError {
                issuer: name.into(),
                reason: format!("bad Vault address: {e}"),
            })?;
        Ok(Vault {
            url,
            token: env(name, token_env)?,
            namespace: namespace.clone(),
            client,
        })
    }

    pub async fn revoke(&self, req: &RevokeRequest) -> Attempt {
        let mut r = self
            .client
            .post(self.url.clone())
            .header("x-vault-token", &self.token)
            .json(&serde_json::json!({ "accessor": req.token_id }));
        if let Some(ns) = &self.namespace {
            r = r.header("x-vault-namespace", ns);
        }
        send(r).await
    }
}
