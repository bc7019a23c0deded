//! What the issuer knows about a token (SPEC §4). Every field is optional;
//! a detector whose field is absent does not run for that token.

use serde::{Deserialize, Serialize};

/// Issuer-side facts about one token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenMetadata {
    pub issuer: String,
    pub token_id: String,
    /// Allowed actions as glob patterns (`*` any run, `?` one character),
    /// e.g. `GET /v1/orders/*` or `s3:Get*`. Absent: no scope check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Networks the token may be used from, in CIDR notation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_cidrs: Option<Vec<String>>,
    /// The only device id the token may be used from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_device: Option<String>,
    /// Expiry, RFC 3339 or epoch ms (as in events).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_ts")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

mod opt_ts {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::time::{format_rfc3339_ms, in_range, parse_rfc3339_ms};

    pub fn serialize<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(ms) => s.serialize_str(&format_rfc3339_ms(*ms)),
            None => s.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Ms(i64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let raw = Option::<Raw>::deserialize(d)?;
        raw.map(|r| {
            match r {
                Raw::Ms(ms) => in_range(ms),
                Raw::Text(t) => parse_rfc3339_ms(&t),
            }
            .ok_or_else(|| {
                serde::de::Error::custom(
                    "expires_at is not RFC 3339 or epoch ms between 1970 and 9999",
                )
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_expiry_in_both_forms_and_rejects_unknown_fields() {
        let a: TokenMetadata = serde_json::from_str(
            r#"{"issuer":"i","token_id":"t","expires_at":"1970-01-01T00:00:01Z"}"#,
        )
        .unwrap();
        let b: TokenMetadata =
            serde_json::from_str(r#"{"issuer":"i","token_id":"t","expires_at":1000}"#).unwrap();
        assert_eq!(a.expires_at, Some(1000));
        assert_eq!(a, b);
        assert!(
            serde_json::from_str::<TokenMetadata>(r#"{"issuer":"i","token_id":"t","scope":[]}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<TokenMetadata>(
                r#"{"issuer":"i","token_id":"t","expires_at":"soon"}"#
            )
            .is_err()
        );
    }
}
