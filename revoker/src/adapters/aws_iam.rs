//! AWS IAM: `UpdateAccessKey` with `Status=Inactive` for the access key id
//! (the `token_id`), signed with SigV4 by `aws-sigv4`. Deactivating, not
//! deleting, keeps the key for forensics and lets an owner re-enable it.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use url::Url;

use super::{AdapterError, Attempt, RevokeRequest, env, transport};
use crate::config::IssuerConfig;

pub struct AwsIam {
    pub(super) endpoint: Url,
    region: String,
    credentials: Credentials,
    client: reqwest::Client,
}

/// The IAM user name in a principal: `alice`, or the last part of
/// `arn:aws:iam::123456789012:user/path/alice`. Anything else is not one.
pub fn user_name(principal: &str) -> Option<&str> {
    let name = match principal.strip_prefix("arn:aws:iam::") {
        Some(rest) => rest.split_once(":user/")?.1.rsplit('/').next()?,
        None => principal,
    };
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    valid.then_some(name)
}

impl AwsIam {
    pub fn build(
        name: &str,
        config: &IssuerConfig,
        client: reqwest::Client,
    ) -> Result<Self, AdapterError> {
        let IssuerConfig::AwsIam {
            endpoint,
            region,
            access_key_id_env,
            secret_access_key_env,
            session_token_env,
        } = config
        else {
            unreachable!("dispatched by kind")
        };
        let session = session_token_env
            .as_deref()
            .map(|v| env(name, v))
            .transpose()?;
        let credentials = Credentials::new(
            env(name, access_key_id_env)?,
            env(name, secret_access_key_env)?,
            session,
            None,
            "tokenwatch-config",
        );
        Ok(AwsIam {
            endpoint: endpoint.clone(),
            region: region.clone(),
            credentials,
            client,
        })
    }

    pub async fn revoke(&self, req: &RevokeRequest) -> Attempt {
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("Action", "UpdateAccessKey")
                .append_pair("Version", "2010-05-08")
                .append_pair("AccessKeyId", &req.token_id)
                .append_pair("Status", "Inactive");
            if let Some(user) = req.principal.as_deref().and_then(user_name) {
                form.append_pair("UserName", user);
            }
            form.finish()
        };
        let host = match self.endpoint.host_str() {
            Some(h) => match self.endpoint.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            },
            None => return Attempt::Failed("IAM endpoint has no host".into()),
        };
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let headers = [("host", host.as_str()), ("content-type", content_type)];
        let identity = self.credentials.clone().into();
        let params = match v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("iam")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
        {
            Ok(p) => p.into(),
            Err(e) => return Attempt::Failed(format!("cannot build SigV4 parameters: {e}")),
        };
        let signable = match SignableRequest::new(
            "POST",
            self.endpoint.as_str(),
            headers.into_iter(),
            SignableBody::Bytes(body.as_bytes()),
        ) {
            Ok(s) => s,
            Err(e) => return Attempt::Failed(format!("cannot sign the request: {e}")),
        };
        let instructions = match sign(signable, &params) {
            Ok(out) => out.into_parts().0,
            Err(e) => return Attempt::Failed(format!("cannot sign the request: {e}")),
        };
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .header("content-type", content_type)
            .body(body);
        let (signed_headers, _) = instructions.into_parts();
        for header in signed_headers {
            request = request.header(header.name(), header.value());
        }
        match request.send().await {
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                if status.is_success() {
                    return Attempt::Revoked;
                }
                // Only an identifier-shaped code is kept, never free text
                // that could echo what was sent.
                let code = xml_code(&text)
                    .filter(|c| {
                        c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
                    })
                    .unwrap_or("");
                match code {
                    "Throttling"
                    | "ThrottlingException"
                    | "ServiceUnavailable"
                    | "InternalFailure"
                    | "RequestExpired" => Attempt::Retry {
                        reason: format!("IAM {status} {code}"),
                        after: None,
                    },
                    _ if status.is_server_error() => Attempt::Retry {
                        reason: format!("IAM {status} {code}"),
                        after: None,
                    },
                    _ => Attempt::Failed(format!("IAM {status} {code}")),
                }
            }
            Err(e) => transport(e),
        }
    }
}

/// The `<Code>` of an AWS query-API error document.
fn xml_code(body: &str) -> Option<&str> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = body[start..].find("</Code>")? + start;
    Some(body[start..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_from_principals() {
        assert_eq!(user_name("alice"), Some("alice"));
        assert_eq!(
            user_name("arn:aws:iam::123456789012:user/ops/alice"),
            Some("alice")
        );
        assert_eq!(user_name("arn:aws:iam::123456789012:role/admin"), None);
        assert_eq!(user_name("AROAEXAMPLE:session name"), None);
        assert_eq!(
            xml_code("<ErrorResponse><Error><Code>NoSuchEntity</Code></Error></ErrorResponse>"),
            Some("NoSuchEntity")
        );
    }
}
