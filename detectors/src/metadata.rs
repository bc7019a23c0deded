//! Token metadata (SPEC §4): scopes, bound networks and device, expiry.
//! Loaded from a file (JSON array or one object per line) and updated live
//! by whoever owns the `token-metadata` topic; compiled once on update.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;
use schemas::TokenMetadata;

use crate::glob::Glob;

/// Metadata ready for per-event checks.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledMetadata {
    pub scopes: Option<Vec<Glob>>,
    pub bound_cidrs: Option<Vec<IpNet>>,
    pub bound_device: Option<String>,
    pub expires_at_ms: Option<i64>,
    pub owner: Option<String>,
}

impl CompiledMetadata {
    /// Compiles one record, or says what is wrong with it.
    pub fn compile(m: &TokenMetadata) -> Result<Self, String> {
        if m.issuer.is_empty() || m.token_id.is_empty() {
            return Err("issuer and token_id must not be empty".into());
        }
        let bound_cidrs = match &m.bound_cidrs {
            Some(list) => {
                let mut nets = Vec::with_capacity(list.len());
                for text in list {
                    nets.push(parse_cidr(text).ok_or_else(|| {
                        format!("bound_cidrs: {text:?} is not an address or CIDR")
                    })?);
                }
                Some(nets)
            }
            None => None,
        };
        Ok(CompiledMetadata {
            scopes: m
                .scopes
                .as_ref()
                .map(|s| s.iter().map(|p| Glob::new(p)).collect()),
            bound_cidrs,
            bound_device: m.bound_device.clone(),
            expires_at_ms: m.expires_at,
            owner: m.owner.clone(),
        })
    }
}

/// Accepts `10.0.0.0/8` or a bare address (a /32 or /128).
pub fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
        .map(|n| n.trunc())
}

/// Seeded per process (ids come from input), faster than SipHash: every
/// event looks its token up here.
type Hasher = foldhash::fast::RandomState;

/// All known metadata, by issuer then token id.
#[derive(Debug, Default, Clone)]
pub struct MetadataStore {
    by_issuer: HashMap<String, HashMap<String, Arc<CompiledMetadata>, Hasher>, Hasher>,
}

impl MetadataStore {
    pub fn get(&self, issuer: &str, token_id: &str) -> Option<&CompiledMetadata> {
        self.by_issuer.get(issuer)?.get(token_id).map(Arc::as_ref)
    }

    /// Adds or replaces one token's metadata.
    pub fn upsert(&mut self, m: &TokenMetadata) -> Result<(), String> {
        let compiled = CompiledMetadata::compile(m)?;
        self.by_issuer
            .entry(m.issuer.clone())
            .or_default()
            .insert(m.token_id.clone(), Arc::new(compiled));
        Ok(())
    }

    /// Forgets one token (a tombstone on the metadata topic).
    pub fn remove(&mut self, issuer: &str, token_id: &str) -> bool {
        self.by_issuer
            .get_mut(issuer)
            .is_some_and(|tokens| tokens.remove(token_id).is_some())
    }

    pub fn len(&self) -> usize {
        self.by_issuer.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parses a JSON array of records, or one JSON object per line. Returns
    /// every problem, each with its record number, if any record is bad.
    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        let records: Vec<(usize, Result<TokenMetadata, String>)> =
            if text.trim_start().starts_with('[') {
                match serde_json::from_str::<Vec<serde_json::Value>>(text) {
                    Ok(values) => values
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| (i + 1, serde_json::from_value(v).map_err(|e| e.to_string())))
                        .collect(),
                    Err(e) => return Err(vec![format!("not a JSON array of records: {e}")]),
                }
            } else {
                text.lines()
                    .enumerate()
                    .filter(|(_, line)| !line.trim().is_empty())
                    .map(|(i, line)| (i + 1, serde_json::from_str(line).map_err(|e| e.to_string())))
                    .collect()
            };
        let mut store = MetadataStore::default();
        let mut problems = Vec::new();
        for (n, record) in records {
            if let Err(e) = record.and_then(|m| store.upsert(&m)) {
                problems.push(format!("record {n}: {e}"));
            }
        }
        if problems.is_empty() {
            Ok(store)
        } else {
            Err(problems)
        }
    }

    /// Reads [`parse`](Self::parse)'s formats from a file.
    pub fn load(path: &Path) -> Result<Self, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
        Self::parse(&text).map_err(|problems| {
            problems
                .into_iter()
                .map(|p| format!("{}: {p}", path.display()))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arrays_and_lines_and_lists_every_bad_record() {
        let lines = r#"{"issuer":"gh","token_id":"t1","scopes":["repo.*"],"bound_cidrs":["10.0.0.0/8","192.0.2.7"]}

{"issuer":"gh","token_id":"t2","expires_at":"2026-01-01T00:00:00Z"}"#;
        let store = MetadataStore::parse(lines).unwrap();
        assert_eq!(store.len(), 2);
        let t1 = store.get("gh", "t1").unwrap();
        assert_eq!(
            t1.bound_cidrs.as_ref().unwrap()[1].to_string(),
            "192.0.2.7/32"
        );
        assert!(store.get("okta", "t1").is_none());

        let array = r#"[{"issuer":"gh","token_id":"t1"},{"issuer":"gh","token_id":"t2","bound_cidrs":["nope"]},{"issuer":"","token_id":"x"},{"issuer":"a"}]"#;
        let problems = MetadataStore::parse(array).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("record 2: bound_cidrs: \"nope\""));
        assert!(problems[2].starts_with("record 4:"));
    }

    #[test]
    fn live_updates_replace_and_remove() {
        let mut store = MetadataStore::default();
        let mut m = TokenMetadata {
            issuer: "gh".into(),
            token_id: "t".into(),
            ..Default::default()
        };
        store.upsert(&m).unwrap();
        assert!(store.get("gh", "t").unwrap().scopes.is_none());
        m.scopes = Some(vec!["GET *".into()]);
        store.upsert(&m).unwrap();
        assert!(store.get("gh", "t").unwrap().scopes.is_some());
        assert!(store.remove("gh", "t"));
        assert!(!store.remove("gh", "t"));
        assert!(store.is_empty());
    }
}
