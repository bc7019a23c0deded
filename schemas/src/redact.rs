//! Redaction of records that leave the pipeline undecoded (dead letters).
//!
//! A record that cannot be decoded may still hold a raw secret: a gateway
//! line with one Latin-1 byte is not UTF-8, yet its `token` is intact. So
//! the scan works on bytes and needs no parse. It replaces, with the value's
//! fingerprint:
//!
//! - the value after any secret-named key (`token`, `authorization`,
//!   `client_secret`, ... and the configured extras), in JSON (`"token":
//!   "..."`), header (`Authorization: Bearer ...`) or form (`token=...`)
//!   shape. Key names match case-insensitively, ignoring `_` and `-`, so
//!   `accessToken`, `access_token` and `ACCESS-TOKEN` are one name. An
//!   auth scheme (`Bearer`, `Basic`, `token`) in front of the value is kept.
//! - well-known secret shapes anywhere (GitHub, GitLab, Slack, Stripe,
//!   Vault, npm, PyPI, Google API keys and JWTs).
//!
//! Everything else stays, so an operator can still see why the record was
//! refused. The scan never fails and is linear in the record's length.

use crate::Fingerprinter;

/// Secret-named keys, normalised (lower case, no `_` or `-`).
const SECRET_KEYS: &[&str] = &[
    "token",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "sessiontoken",
    "privatetoken",
    "apitoken",
    "authtoken",
    "bearertoken",
    "authorization",
    "proxyauthorization",
    "apikey",
    "xapikey",
    "secret",
    "clientsecret",
    "secretaccesskey",
    "awssecretaccesskey",
    "password",
    "passwd",
    "cookie",
    "setcookie",
];

/// Prefixes of secrets that are recognisable wherever they appear.
const SECRET_SHAPES: &[&str] = &[
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxr-",
    "xoxs-",
    "sk_live_",
    "rk_live_",
    "sk_test_",
    "hvs.",
    "hvb.",
    "npm_",
    "pypi-",
    "AIza",
    "eyJ",
];

/// Shortest secret a shape is taken to be: shorter runs are ordinary words.
const MIN_SHAPE_LEN: usize = 16;

/// Auth schemes kept in front of a redacted value.
const SCHEMES: &[&str] = &["bearer", "basic", "token", "bot", "digest", "sso-key"];

/// Finds and fingerprints secrets in raw bytes; see the module docs.
#[derive(Debug, Clone)]
pub struct Redactor {
    fingerprinter: Fingerprinter,
    keys: Vec<Vec<u8>>,
}

/// What [`Redactor::redact`] replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted {
    pub bytes: Vec<u8>,
    /// How many values were replaced.
    pub count: usize,
}

impl Redactor {
    /// A redactor for the built-in secret keys plus `extra_keys`.
    pub fn new(fingerprinter: Fingerprinter, extra_keys: &[String]) -> Self {
        let mut keys: Vec<Vec<u8>> = SECRET_KEYS.iter().map(|k| k.as_bytes().to_vec()).collect();
        keys.extend(extra_keys.iter().map(|k| normalise(k.as_bytes())));
        keys.sort();
        keys.dedup();
        Redactor {
            fingerprinter,
            keys,
        }
    }

    /// The key of a dead-letter copy: a Kafka key may be the token itself,
    /// so it is always replaced by its fingerprint. Equal keys still map to
    /// equal fingerprints, so the copy is partitioned alike.
    pub fn key(&self, key: &[u8]) -> String {
        self.fingerprinter.fingerprint_bytes(key)
    }

    /// `record` with every secret found replaced by its fingerprint, or
    /// `None` when nothing was found.
    pub fn redact(&self, record: &[u8]) -> Option<Redacted> {
        let mut out = Vec::new();
        let mut copied = 0;
        let mut count = 0;
        let mut i = 0;
        while i < record.len() {
            if !is_word(record[i]) || (i > 0 && is_word(record[i - 1])) {
                i += 1;
                continue;
            }
            if let Some(end) = shape_at(record, i) {
                out.extend_from_slice(&record[copied..i]);
                out.extend_from_slice(
                    self.fingerprinter
                        .fingerprint_bytes(&record[i..end])
                        .as_bytes(),
                );
                copied = end;
                count += 1;
                i = end;
                continue;
            }
            let word_end = i + record[i..].iter().take_while(|&&b| is_word(b)).count();
            if self.is_secret_key(&record[i..word_end])
                && let Some((start, end)) = value_after(record, word_end)
            {
                out.extend_from_slice(&record[copied..start]);
                out.extend_from_slice(
                    self.fingerprinter
                        .fingerprint_bytes(&record[start..end])
                        .as_bytes(),
                );
                copied = end;
                count += 1;
                i = end;
                continue;
            }
            i = word_end;
        }
        if count == 0 {
            return None;
        }
        out.extend_from_slice(&record[copied..]);
        Some(Redacted { bytes: out, count })
    }

    fn is_secret_key(&self, word: &[u8]) -> bool {
        word.len() <= 64 && self.keys.binary_search(&normalise(word)).is_ok()
    }
}

/// A key name in the form the key list holds.
fn normalise(word: &[u8]) -> Vec<u8> {
    word.iter()
        .filter(|&&b| b != b'_' && b != b'-')
        .map(u8::to_ascii_lowercase)
        .collect()
}

/// A character of a key name or of a secret.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// A character a secret's value can hold, beyond word characters.
fn is_secret_char(b: u8) -> bool {
    is_word(b) || matches!(b, b'.' | b'+' | b'/' | b'=' | b'~')
}

/// The end of a known secret shape starting at `i`, if one does.
fn shape_at(record: &[u8], i: usize) -> Option<usize> {
    let rest = &record[i..];
    let prefix = SECRET_SHAPES
        .iter()
        .find(|p| rest.starts_with(p.as_bytes()))?;
    let len = rest.iter().take_while(|&&b| is_secret_char(b)).count();
    let run = &rest[..len];
    if len < MIN_SHAPE_LEN || len <= prefix.len() {
        return None;
    }
    // A JWT is three dot-separated parts; `eyJ` alone starts many words.
    if *prefix == "eyJ" && run.iter().filter(|&&b| b == b'.').count() < 2 {
        return None;
    }
    Some(i + len)
}

/// The span of the value that follows a key ending at `key_end`: after an
/// optional closing quote, a `:` or `=`, and optional spaces. A quoted value
/// runs to its closing quote (escapes honoured) or the record's end; a bare
/// one to the next space or separator. A leading auth scheme is left out.
fn value_after(record: &[u8], key_end: usize) -> Option<(usize, usize)> {
    let mut i = key_end;
    if matches!(record.get(i), Some(b'"' | b'\'')) {
        i += 1;
    }
    i = skip_spaces(record, i);
    if !matches!(record.get(i), Some(b':' | b'=')) {
        return None;
    }
    i = skip_spaces(record, i + 1);
    let (start, end) = match record.get(i)? {
        &quote @ (b'"' | b'\'') => {
            let start = i + 1;
            let mut j = start;
            while j < record.len() && record[j] != quote {
                j += if record[j] == b'\\' { 2 } else { 1 };
            }
            (start, j.min(record.len()))
        }
        _ => {
            let len = record[i..]
                .iter()
                .take_while(|&&b| {
                    !matches!(
                        b,
                        b' ' | b'\t'
                            | b'\r'
                            | b'\n'
                            | b','
                            | b';'
                            | b'&'
                            | b'}'
                            | b']'
                            | b'"'
                            | b'\''
                    )
                })
                .count();
            let end = i + len;
            let word = &record[i..end];
            // `Authorization: Bearer abc`: the secret is the next run.
            if is_scheme(word) && record.get(end) == Some(&b' ') {
                let next = skip_spaces(record, end);
                let len = record[next..]
                    .iter()
                    .take_while(|&&b| {
                        !matches!(
                            b,
                            b' ' | b'\t' | b'\r' | b'\n' | b',' | b';' | b'&' | b'"' | b'\''
                        )
                    })
                    .count();
                return (len > 0).then_some((next, next + len));
            }
            if matches!(word, b"null" | b"true" | b"false")
                || word.first().is_some_and(|b| matches!(b, b'{' | b'['))
            {
                return None;
            }
            (i, end)
        }
    };
    // A scheme inside a quoted value: keep `Bearer ` and redact the rest.
    let value = &record[start..end];
    let scheme = value
        .iter()
        .position(|&b| b == b' ')
        .filter(|&p| is_scheme(&value[..p]));
    let start = match scheme {
        Some(p) => skip_spaces(record, start + p),
        None => start,
    };
    (end > start).then_some((start, end))
}

fn is_scheme(word: &[u8]) -> bool {
    SCHEMES
        .iter()
        .any(|s| word.eq_ignore_ascii_case(s.as_bytes()))
}

fn skip_spaces(record: &[u8], mut i: usize) -> usize {
    while matches!(record.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn redactor() -> Redactor {
        Redactor::new(Fingerprinter::new(b"k"), &["X-Gateway-Key".to_string()])
    }

    fn redacted(record: &[u8]) -> String {
        let r = redactor().redact(record).expect("something to redact");
        String::from_utf8_lossy(&r.bytes).into_owned()
    }

    #[test]
    fn replaces_a_token_in_json_that_is_not_utf8() {
        let fp = Fingerprinter::new(b"k").fingerprint("s3cr3t-value");
        let out = redacted(b"{\"token\":\"s3cr3t-value\",\"ua\":\"caf\xe9\",\"token_id\":\"t1\"}");
        assert!(!out.contains("s3cr3t"), "{out}");
        assert!(out.contains(&format!("\"token\":\"{fp}\"")), "{out}");
        assert!(out.contains("\"token_id\":\"t1\""), "the rest stays: {out}");
        assert!(out.contains("caf"), "{out}");
    }

    #[test]
    fn finds_secret_keys_in_every_spelling_and_shape() {
        for record in [
            &b"{\"accessToken\": \"s3cr3t-value\"}"[..],
            b"{\"ACCESS-TOKEN\" : 's3cr3t-value'}",
            b"GET /x?access_token=s3cr3t-value&page=2",
            b"Authorization: Bearer s3cr3t-value\r\nHost: x",
            b"{\"authorization\":\"Basic s3cr3t-value\"}",
            b"{\"headers\":{\"x-gateway-key\":\"s3cr3t-value\"}}",
            b"{\"client_secret\":\"s3cr3t\\\"-value\"}",
            b"{\"token\":\"s3cr3t-value",
        ] {
            let out = redacted(record);
            assert!(!out.contains("s3cr3t"), "{out}");
        }
        assert!(
            redacted(b"Authorization: Bearer s3cr3t-value")
                .starts_with("Authorization: Bearer fp_")
        );
    }

    #[test]
    fn finds_secret_shapes_anywhere() {
        let ghp = "ghp_0123456789abcdefghijABCDEFGHIJ012345";
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXBhcnQ";
        let out = redacted(format!("user agent {ghp} and {jwt} \u{1}").as_bytes());
        assert!(!out.contains(ghp) && !out.contains(jwt), "{out}");
    }

    #[test]
    fn leaves_ordinary_records_alone() {
        for record in [
            &b"{\"token_id\":\"t1\",\"principal\":\"alice\",\"action\":\"s3:GetObject\"}"[..],
            b"{\"event\":\"token refresh\",\"tokens\":3}",
            b"{\"token\":null,\"token_id\":\"t\"}",
            b"{\"password_changed\":true,\"eyJ\":1}",
        ] {
            assert_eq!(
                redactor().redact(record),
                None,
                "{}",
                String::from_utf8_lossy(record)
            );
        }
    }

    #[test]
    fn keys_become_fingerprints() {
        let r = redactor();
        assert_eq!(
            r.key(b"s3cr3t"),
            Fingerprinter::new(b"k").fingerprint("s3cr3t")
        );
    }

    proptest! {
        /// Whatever surrounds it, a secret after a secret key never survives.
        #[test]
        fn a_secret_never_survives(
            before in proptest::collection::vec(any::<u8>(), 0..64),
            after in proptest::collection::vec(any::<u8>(), 0..64),
            secret in "[A-Za-z0-9_.+/=-]{8,40}",
            key in prop::sample::select(vec!["\"token\":\"", "token=", "\"Authorization\": \"Bearer ", "'password': '"]),
        ) {
            let mut record = before.clone();
            // A word character before the key would make it another word.
            record.push(b' ');
            record.extend_from_slice(key.as_bytes());
            record.extend_from_slice(secret.as_bytes());
            record.push(b'"');
            record.extend_from_slice(&after);
            let out = redactor().redact(&record).expect("found");
            let canary = secret.as_bytes();
            prop_assert!(!out.bytes.windows(canary.len()).any(|w| w == canary)
                || before.windows(canary.len()).any(|w| w == canary)
                || after.windows(canary.len()).any(|w| w == canary));
        }
    }
}
