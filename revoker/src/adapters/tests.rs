//! Each adapter against a real HTTP server on 127.0.0.1 that checks the
//! exact request: method, path, headers, authentication, body encoding.

use std::time::Duration;

use base64::Engine;
use schemas::Secret;

use super::*;
use crate::config::ClientAuth;
use crate::testing::{Reply, TestServer};

fn client() -> reqwest::Client {
    crate::service::http_client(Duration::from_millis(500)).unwrap()
}

fn request(token_id: &str, secret: Option<&str>) -> RevokeRequest {
    RevokeRequest {
        issuer: "iss".into(),
        token_id: token_id.into(),
        principal: Some("arn:aws:iam::123456789012:user/ops/alice".into()),
        decision_id: "dec_1".into(),
        reason: "impossible travel".into(),
        secret: secret.map(|s| Secret::new(s.into())),
    }
}

fn set_env(var: &str, value: &str) {
    // Tests in this module use distinct variable names, so concurrent tests
    // never race on one variable.
    unsafe { std::env::set_var(var, value) };
}

#[tokio::test]
async fn oauth2_rfc7009_with_basic_auth_and_introspection() {
    let server = TestServer::start(Reply::json(200, r#"{"active":false}"#)).await;
    set_env("TW_TEST_OAUTH_SECRET_1", "s3cr:et");
    let config = IssuerConfig::Oauth2 {
        revocation_url: server.url("/oauth2/revoke"),
        client_id: "tokenwatch app".into(),
        client_secret_env: "TW_TEST_OAUTH_SECRET_1".into(),
        client_auth: ClientAuth::ClientSecretBasic,
        token_type_hint: Some("access_token".into()),
        introspection_url: Some(server.url("/oauth2/introspect")),
    };
    let adapter = Adapter::build("iss", &config, client()).unwrap();
    server.script([Reply::status(200)]);
    assert_eq!(
        adapter.revoke(&request("jti-1", Some("at_CANARY"))).await,
        Attempt::Revoked
    );

    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let revoke = &reqs[0];
    assert_eq!(
        (revoke.method.as_str(), revoke.path.as_str()),
        ("POST", "/oauth2/revoke")
    );
    assert_eq!(
        revoke.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    // RFC 6749 §2.3.1: form-urlencode id and secret, then Basic.
    let expected = base64::engine::general_purpose::STANDARD.encode("tokenwatch+app:s3cr%3Aet");
    assert_eq!(
        revoke.header("authorization"),
        Some(format!("Basic {expected}").as_str())
    );
    assert_eq!(
        revoke.form(),
        vec![
            ("token".into(), "at_CANARY".into()),
            ("token_type_hint".into(), "access_token".into())
        ]
    );
    assert_eq!(reqs[1].path, "/oauth2/introspect");
    assert_eq!(reqs[1].form(), vec![("token".into(), "at_CANARY".into())]);

    // 200 from revocation but introspection still active: not revoked.
    server.script([Reply::status(200), Reply::json(200, r#"{"active":true}"#)]);
    assert!(matches!(
        adapter.revoke(&request("jti-1", Some("at_CANARY"))).await,
        Attempt::Retry { .. }
    ));
    // No raw token held: RFC 7009 cannot work.
    assert!(matches!(
        adapter.revoke(&request("jti-1", None)).await,
        Attempt::NeedsSecret(_)
    ));
}

#[tokio::test]
async fn oauth2_client_secret_post_puts_credentials_in_the_body() {
    let server = TestServer::start(Reply::status(200)).await;
    set_env("TW_TEST_OAUTH_SECRET_2", "pw");
    let config = IssuerConfig::Oauth2 {
        revocation_url: server.url("/revoke"),
        client_id: "app".into(),
        client_secret_env: "TW_TEST_OAUTH_SECRET_2".into(),
        client_auth: ClientAuth::ClientSecretPost,
        token_type_hint: None,
        introspection_url: None,
    };
    let adapter = Adapter::build("iss", &config, client()).unwrap();
    assert_eq!(
        adapter.revoke(&request("t", Some("tok"))).await,
        Attempt::Revoked
    );
    let r = &server.requests()[0];
    assert!(r.header("authorization").is_none());
    assert_eq!(
        r.form(),
        vec![
            ("token".into(), "tok".into()),
            ("client_id".into(), "app".into()),
            ("client_secret".into(), "pw".into())
        ]
    );
}

#[tokio::test]
async fn github_batches_raw_credentials_and_202_is_accepted_not_revoked() {
    let server = TestServer::start(Reply::status(202)).await;
    set_env("TW_TEST_GH_TOKEN", "ghp_service");
    let config = IssuerConfig::Github {
        url: server.url("/credentials/revoke"),
        token_env: Some("TW_TEST_GH_TOKEN".into()),
        batch_max: 1000,
        batch_linger: Duration::from_millis(200),
    };
    let adapter = std::sync::Arc::new(Adapter::build("gh", &config, client()).unwrap());
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let a = adapter.clone();
            tokio::spawn(async move {
                a.revoke(&request(
                    &format!("fp_{i}"),
                    Some(&format!("ghp_leaked{i}")),
                ))
                .await
            })
        })
        .collect();
    for c in calls {
        assert!(matches!(c.await.unwrap(), Attempt::Accepted(_)));
    }
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "three credentials, one request");
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/credentials/revoke")
    );
    assert_eq!(r.header("authorization"), Some("Bearer ghp_service"));
    assert_eq!(r.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(r.header("x-github-api-version"), Some("2022-11-28"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let mut creds: Vec<&str> = body["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    creds.sort();
    assert_eq!(creds, ["ghp_leaked0", "ghp_leaked1", "ghp_leaked2"]);

    // The primary rate limit: retry after the reset.
    server.script([Reply::status(403)
        .header("x-ratelimit-remaining", "0")
        .header("retry-after", "7")]);
    let r = adapter.revoke(&request("fp_9", Some("ghp_x"))).await;
    assert!(matches!(r, Attempt::Retry { after: Some(_), .. }), "{r:?}");
}

#[tokio::test]
async fn vault_revokes_by_accessor() {
    let server = TestServer::start(Reply::status(204)).await;
    set_env("TW_TEST_VAULT_TOKEN", "hvs.admin");
    let config = IssuerConfig::Vault {
        address: server.url("/"),
        token_env: "TW_TEST_VAULT_TOKEN".into(),
        namespace: Some("team-a".into()),
    };
    let adapter = Adapter::build("vault", &config, client()).unwrap();
    assert_eq!(
        adapter.revoke(&request("acc-8f2", None)).await,
        Attempt::Revoked
    );
    let r = &server.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/auth/token/revoke-accessor")
    );
    assert_eq!(r.header("x-vault-token"), Some("hvs.admin"));
    assert_eq!(r.header("x-vault-namespace"), Some("team-a"));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap(),
        serde_json::json!({"accessor": "acc-8f2"})
    );
    server.set_default(Reply::json(400, r#"{"errors":["invalid accessor"]}"#));
    assert!(
        matches!(adapter.revoke(&request("nope", None)).await, Attempt::Failed(e) if e.contains("400"))
    );
}

#[tokio::test]
async fn aws_iam_signs_update_access_key_with_sigv4() {
    let server = TestServer::start(Reply::status(200)).await;
    set_env("TW_TEST_AWS_ID", "AKIDTOKENWATCH");
    set_env(
        "TW_TEST_AWS_SECRET",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    );
    let config = IssuerConfig::AwsIam {
        endpoint: server.url("/"),
        region: "us-east-1".into(),
        access_key_id_env: "TW_TEST_AWS_ID".into(),
        secret_access_key_env: "TW_TEST_AWS_SECRET".into(),
        session_token_env: None,
    };
    let adapter = Adapter::build("aws", &config, client()).unwrap();
    assert_eq!(
        adapter.revoke(&request("AKIASTOLEN", None)).await,
        Attempt::Revoked
    );
    let r = &server.requests()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/"));
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded; charset=utf-8")
    );
    let auth = r.header("authorization").unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTOKENWATCH/"),
        "{auth}"
    );
    assert!(auth.contains("/us-east-1/iam/aws4_request"), "{auth}");
    assert!(auth.contains("SignedHeaders=") && auth.contains("Signature="));
    assert!(r.header("x-amz-date").is_some());
    let form = r.form();
    for (k, v) in [
        ("Action", "UpdateAccessKey"),
        ("Version", "2010-05-08"),
        ("AccessKeyId", "AKIASTOLEN"),
        ("Status", "Inactive"),
        ("UserName", "alice"),
    ] {
        assert!(form.contains(&(k.into(), v.into())), "{k}={v} in {form:?}");
    }
    server.set_default(
        Reply::status(400)
            .header("content-type", "text/xml")
            .delayed(Duration::ZERO),
    );
    server.script([Reply {
        body: "<ErrorResponse><Error><Code>NoSuchEntity</Code></Error></ErrorResponse>".into(),
        ..Reply::status(404)
    }]);
    assert!(
        matches!(adapter.revoke(&request("AKIAGONE", None)).await, Attempt::Failed(e) if e.contains("NoSuchEntity"))
    );
    server.script([Reply {
        body: "<ErrorResponse><Error><Code>Throttling</Code></Error></ErrorResponse>".into(),
        ..Reply::status(400)
    }]);
    assert!(matches!(
        adapter.revoke(&request("AKIASLOW", None)).await,
        Attempt::Retry { .. }
    ));
}

#[tokio::test]
async fn http_template_fills_url_headers_and_json_body() {
    let server = TestServer::start(Reply::status(200)).await;
    set_env("TW_TEST_HTTP_AUTH", "Bearer admin-key");
    let config = IssuerConfig::Http {
        method: "PUT".into(),
        url: format!("http://{}/api/tokens/{{token_id}}/disable", server.addr),
        headers: [
            ("content-type".to_string(), "application/json".to_string()),
            ("x-decision".to_string(), "{decision_id}".to_string()),
        ]
        .into(),
        headers_from_env: [("authorization".to_string(), "TW_TEST_HTTP_AUTH".to_string())].into(),
        body: Some(r#"{"reason":"{reason}","by":"tokenwatch","principal":"{principal}"}"#.into()),
    };
    let adapter = Adapter::build("custom", &config, client()).unwrap();
    let mut req = request("key/1 2", None);
    req.reason = "said \"hi\"".into();
    assert_eq!(adapter.revoke(&req).await, Attempt::Revoked);
    let r = &server.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("PUT", "/api/tokens/key%2F1%202/disable")
    );
    assert_eq!(r.header("authorization"), Some("Bearer admin-key"));
    assert_eq!(r.header("x-decision"), Some("dec_1"));
    assert_eq!(
        r.header("idempotency-key"),
        Some("dec_1"),
        "one key per decision"
    );
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["reason"], "said \"hi\"");
}

#[tokio::test]
async fn statuses_and_timeouts_are_classified() {
    let server = TestServer::start(Reply::status(200)).await;
    let config = IssuerConfig::Http {
        method: "POST".into(),
        url: format!("http://{}/k", server.addr),
        headers: Default::default(),
        headers_from_env: Default::default(),
        body: None,
    };
    let adapter = Adapter::build("c", &config, client()).unwrap();
    server.script([
        Reply::status(503).header("retry-after", "3"),
        Reply::status(500),
        Reply::status(429),
        Reply::status(404),
        Reply::status(200).delayed(Duration::from_secs(2)),
    ]);
    let r = request("t", None);
    assert_eq!(
        adapter.revoke(&r).await,
        Attempt::Retry {
            reason: "HTTP 503 Service Unavailable".into(),
            after: Some(Duration::from_secs(3))
        }
    );
    assert!(matches!(
        adapter.revoke(&r).await,
        Attempt::Retry { after: None, .. }
    ));
    assert!(matches!(adapter.revoke(&r).await, Attempt::Retry { .. }));
    assert!(matches!(adapter.revoke(&r).await, Attempt::Failed(e) if e.starts_with("HTTP 404")));
    assert!(
        matches!(adapter.revoke(&r).await, Attempt::Retry { reason, .. } if reason.starts_with("timeout"))
    );
}

#[test]
fn retry_after_reads_seconds_and_http_dates_and_is_capped() {
    use std::time::{Duration, SystemTime};

    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    use super::{MAX_RETRY_AFTER, retry_after_at};

    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_813_200);
    let after = |value: &str| {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        retry_after_at(&h, now)
    };
    assert_eq!(after("7"), Some(Duration::from_secs(7)));
    assert_eq!(after("86400"), Some(MAX_RETRY_AFTER), "a day is capped");
    let in_30s = httpdate::fmt_http_date(now + Duration::from_secs(30));
    assert_eq!(after(&in_30s), Some(Duration::from_secs(30)));
    let next_week = httpdate::fmt_http_date(now + Duration::from_secs(7 * 86_400));
    assert_eq!(after(&next_week), Some(MAX_RETRY_AFTER));
    let yesterday = httpdate::fmt_http_date(now - Duration::from_secs(86_400));
    assert_eq!(after(&yesterday), Some(Duration::ZERO));
    assert_eq!(after("soon"), None);
    assert_eq!(retry_after_at(&HeaderMap::new(), now), None);
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_is_never_followed() {
    let elsewhere = TestServer::start(Reply::status(200)).await;
    let issuer = TestServer::start(Reply::status(200)).await;
    let target = elsewhere.url("/collect?token=leaked");
    issuer.script([Reply::status(307).header("location", target.as_str())]);
    let adapter = Adapter::build(
        "iss",
        &IssuerConfig::post(issuer.url("/revoke/{token_id}")),
        client(),
    )
    .unwrap();
    let attempt = adapter.revoke(&request("key-1", None)).await;
    let Attempt::Failed(reason) = attempt else {
        panic!("{attempt:?}");
    };
    assert!(
        reason.contains("HTTP 307") && reason.contains("redirect to http://127.0.0.1"),
        "{reason}"
    );
    assert!(
        !reason.contains("leaked"),
        "the query is not logged: {reason}"
    );
    assert_eq!(issuer.requests().len(), 1);
    assert!(
        elsewhere.requests().is_empty(),
        "the redirect was not followed"
    );
}

#[tokio::test]
async fn an_issuer_echoing_the_token_in_its_error_never_gets_it_stored() {
    let issuer = TestServer::start(Reply::status(200)).await;
    issuer.script([Reply::json(
        400,
        r#"{"error":"invalid_request","error_description":"bad token key-CANARY-77 in request"}"#,
    )]);
    let adapter = Adapter::build(
        "iss",
        &IssuerConfig::post(issuer.url("/revoke/{token_id}")),
        client(),
    )
    .unwrap();
    let attempt = adapter.revoke(&request("key-CANARY-77", None)).await;
    assert_eq!(
        attempt,
        Attempt::Failed("HTTP 400 Bad Request: error invalid_request".into())
    );
    issuer.script([Reply::json(403, "forbidden: key-CANARY-77")]);
    let attempt = adapter.revoke(&request("key-CANARY-77", None)).await;
    assert_eq!(attempt, Attempt::Failed("HTTP 403 Forbidden".into()));
}
