//! Running the Python tools (.venv, made by scripts/pyenv) from tests:
//! moto's IAM through boto3, and the reference Standard Webhooks library.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn python() -> PathBuf {
    let path = std::env::var_os("TOKENWATCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python")));
    assert!(
        path.exists(),
        "no Python with moto and standardwebhooks at {}: run scripts/pyenv (scripts/test does), or set TOKENWATCH_PYTHON",
        path.display()
    );
    path
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support")).join(name)
}

/// Runs a support script; returns (success, stdout + stderr).
pub fn run(name: &str, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(python())
        .arg(script(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_string())
}

/// moto's endpoint, from TOKENWATCH_TEST_MOTO (default 127.0.0.1:5055).
/// Fails with instructions when it does not answer.
pub fn moto() -> String {
    let url =
        std::env::var("TOKENWATCH_TEST_MOTO").unwrap_or_else(|_| "http://127.0.0.1:5055".into());
    let probe = format!("{url}/moto-api/data.json");
    let (ok, out) = run_inline(&format!(
        "import urllib.request; urllib.request.urlopen({probe:?}, timeout=3).read()"
    ));
    assert!(
        ok,
        "moto's server does not answer at {url} ({out}): run `scripts/moto start` (scripts/test does), or set TOKENWATCH_TEST_MOTO"
    );
    url
}

fn run_inline(code: &str) -> (bool, String) {
    let out = Command::new(python())
        .arg("-c")
        .arg(code)
        .output()
        .expect("start python");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// Verifies a webhook with the reference library.
pub fn verify_webhook(secret: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<(), String> {
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let msg = serde_json::json!({ "secret": secret, "headers": headers, "body": String::from_utf8_lossy(body) });
    let (ok, out) = run("verify_webhook.py", &[], Some(&msg.to_string()));
    if ok { Ok(()) } else { Err(out) }
}

/// Validates payloads against `revoker/alert-webhook.schema.json`.
pub fn validate_payloads(payloads: &[serde_json::Value]) -> Result<(), String> {
    let (ok, out) = run(
        "validate_payload.py",
        &[],
        Some(&serde_json::Value::from(payloads.to_vec()).to_string()),
    );
    if ok { Ok(()) } else { Err(out) }
}

/// A received webhook: its headers and body.
pub type Received = (Vec<(String, String)>, Vec<u8>);

/// Verifies many webhooks.
pub fn verify_webhooks(secret: &str, messages: &[Received]) -> Result<(), String> {
    for (headers, body) in messages {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        verify_webhook(secret, &h, body)?;
    }
    Ok(())
}
