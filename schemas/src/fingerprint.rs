//! Token fingerprints: a keyed hash (HMAC-SHA256) of a raw token secret.
//!
//! A fingerprint is stable for a given key, so per-token state and the
//! revocation ledger can key on it, and it cannot be reversed or checked
//! against guessed secrets without the key.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Prefix that marks a `token_id` as a fingerprint of a raw secret.
pub const PREFIX: &str = "fp_";

/// Computes fingerprints with one key.
#[derive(Clone)]
pub struct Fingerprinter {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprinter(<key redacted>)")
    }
}

impl Fingerprinter {
    /// A fingerprinter keyed by `key` (any length; 32 random bytes is right).
    pub fn new(key: &[u8]) -> Self {
        // HMAC takes keys of any length, so this cannot fail.
        let mac = Hmac::<Sha256>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        Fingerprinter { mac }
    }

    /// `fp_` followed by the first 128 bits of HMAC-SHA256(key, secret), in hex.
    pub fn fingerprint(&self, secret: &str) -> String {
        self.fingerprint_bytes(secret.as_bytes())
    }

    /// [`fingerprint`](Self::fingerprint) of bytes that need not be UTF-8
    /// (a Kafka key, a value in an undecodable record).
    pub fn fingerprint_bytes(&self, secret: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(secret);
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(PREFIX.len() + 32);
        out.push_str(PREFIX);
        for byte in &digest[..16] {
            out.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
            out.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hmac_sha256_reference_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let fp = Fingerprinter::new(b"Jefe").fingerprint("what do ya want for nothing?");
        assert_eq!(fp, "fp_5bdcc146bf60754e6a042426089575c7");
    }

    #[test]
    fn depends_on_key_and_secret_and_hides_both() {
        let a = Fingerprinter::new(b"key-a");
        let b = Fingerprinter::new(b"key-b");
        let secret = "ghp_canarySECRET0000000000000000000000";
        assert_eq!(a.fingerprint(secret), a.fingerprint(secret));
        assert_ne!(a.fingerprint(secret), b.fingerprint(secret));
        assert_ne!(a.fingerprint(secret), a.fingerprint("ghp_other"));
        assert!(!a.fingerprint(secret).contains("canary"));
        assert!(!format!("{a:?}").contains("key-a"));
    }
}
