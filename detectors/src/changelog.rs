//! The records of the state changelog: one per token, keyed
//! `issuer/token_id`, its value the token's state in the versioned binary
//! form of [`crate::state::codec`]. Kafka compacts the topic to the latest
//! record per token; the pipeline writes and reads it (the root crate's
//! `changelog` module).
//!
//! [`Dirty`] is what an engine remembers between checkpoints: which tokens
//! changed, by name (the store itself keys tokens by a per-process hash).

use crate::state::codec::{self, CodecError};
use crate::state::{TokenKey, TokenState};

/// One token's checkpointed state.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub issuer: String,
    pub token_id: String,
    /// The principal its events name, if any: a restored token goes to its
    /// principal's shard, as its events do.
    pub principal: Option<String>,
    pub state: TokenState,
}

/// Why a changelog record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("key is not `issuer/token_id` in UTF-8")]
    Key,
    #[error(transparent)]
    Value(#[from] CodecError),
}

impl Entry {
    /// The record key: `issuer/token_id`. Issuer names hold no `/`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.issuer, self.token_id)
    }

    pub fn value(&self) -> Vec<u8> {
        codec::encode(&self.state, self.principal.as_deref())
    }

    /// The partition of the input the token's events are read from: the
    /// changelog is partitioned like the input.
    pub fn partition(&self) -> i32 {
        self.state.position.partition
    }

    pub fn decode(key: &[u8], value: &[u8]) -> Result<Entry, EntryError> {
        let key = std::str::from_utf8(key).map_err(|_| EntryError::Key)?;
        let (issuer, token_id) = key.split_once('/').ok_or(EntryError::Key)?;
        let (state, principal) = codec::decode(value)?;
        Ok(Entry {
            issuer: issuer.to_owned(),
            token_id: token_id.to_owned(),
            principal,
            state,
        })
    }
}

/// A changed token's name.
struct Named {
    issuer: Box<str>,
    token_id: Box<str>,
    principal: Option<Box<str>>,
}

/// Tokens changed since their last checkpoint.
#[derive(Default)]
pub struct Dirty {
    tokens: hashbrown::HashMap<TokenKey, Named, foldhash::fast::RandomState>,
}

impl Dirty {
    /// Marks a token changed (its principal as its latest event names it).
    pub fn mark(&mut self, key: TokenKey, issuer: &str, token_id: &str, principal: Option<&str>) {
        match self.tokens.get_mut(&key) {
            Some(named) => {
                if named.principal.as_deref() != principal && principal.is_some() {
                    named.principal = principal.map(Box::from);
                }
            }
            None => {
                self.tokens.insert(
                    key,
                    Named {
                        issuer: issuer.into(),
                        token_id: token_id.into(),
                        principal: principal.map(Box::from),
                    },
                );
            }
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The changed tokens with their state, forgotten here. A token no
    /// longer in the store (evicted, expired) is skipped: its last record
    /// ages out of the topic.
    pub fn take(&mut self, state: impl Fn(TokenKey) -> Option<TokenState>) -> Vec<Entry> {
        self.tokens
            .drain()
            .filter_map(|(key, named)| {
                Some(Entry {
                    state: state(key)?,
                    issuer: named.issuer.into(),
                    token_id: named.token_id.into(),
                    principal: named.principal.map(Into::into),
                })
            })
            .collect()
    }

    /// Forgets the tokens `forget` says to.
    pub fn forget(&mut self, mut forget: impl FnMut(TokenKey) -> bool) {
        self.tokens.retain(|&key, _| !forget(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Position;

    #[test]
    fn an_entry_round_trips_through_its_record() {
        let mut state = TokenState {
            first_seen_s: 10,
            last_seen_s: 20,
            events: 3,
            ..Default::default()
        };
        state.position = Position::new("api-calls", 5, 1234);
        let entry = Entry {
            issuer: "github".into(),
            token_id: "ghp_fp:ab/cd".into(),
            principal: Some("octocat".into()),
            state,
        };
        assert_eq!(entry.key(), "github/ghp_fp:ab/cd");
        assert_eq!(entry.partition(), 5);
        let back = Entry::decode(entry.key().as_bytes(), &entry.value()).unwrap();
        assert_eq!(
            back, entry,
            "a token id may hold `/`; the issuer never does"
        );
        assert_eq!(
            Entry::decode(b"no-slash", &entry.value()),
            Err(EntryError::Key)
        );
        assert!(matches!(
            Entry::decode(b"a/b", &[9]),
            Err(EntryError::Value(CodecError::UnsupportedVersion(9)))
        ));
    }

    #[test]
    fn dirty_tokens_are_taken_once_with_their_latest_principal() {
        let mut dirty = Dirty::default();
        dirty.mark(1, "i", "a", None);
        dirty.mark(2, "i", "b", Some("p"));
        dirty.mark(1, "i", "a", Some("q"));
        dirty.mark(2, "i", "b", None);
        dirty.mark(3, "i", "gone", None);
        assert_eq!(dirty.len(), 3);
        let state = |key| (key < 3).then(TokenState::default);
        let mut taken = dirty.take(state);
        taken.sort_by(|a, b| a.token_id.cmp(&b.token_id));
        let names: Vec<_> = taken
            .iter()
            .map(|e| (e.token_id.as_str(), e.principal.as_deref()))
            .collect();
        assert_eq!(
            names,
            [("a", Some("q")), ("b", Some("p"))],
            "token 3 left the store: not written; an event naming no principal keeps the one named"
        );
        assert!(dirty.is_empty() && dirty.take(state).is_empty());
    }
}
