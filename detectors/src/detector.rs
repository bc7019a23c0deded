//! The trait every detector implements, and the view of one event it gets.
//!
//! Detectors look at one event at a time with that token's state, which
//! the engine fetches once per event for all of them: one hash lookup per
//! event, and one compact state record per token (see [`crate::state`]).
//! Time is the event's own time; no detector reads a clock.

use schemas::{DetectorKind, Event, EventRef, Finding, Origin};

use crate::geoip::Anonymity;
use crate::metadata::CompiledMetadata;
use crate::state::TokenState;

/// One enriched event, as the detectors see it.
pub struct Observation<'a> {
    pub event: &'a Event,
    pub origin: &'a Origin,
    /// Event time in epoch seconds.
    pub ts_s: u32,
    /// Anonymity flags of `src_ip` (not part of the event schema).
    pub anonymity: Anonymity,
    /// What the issuer knows about the token, if anything.
    pub metadata: Option<&'a CompiledMetadata>,
}

impl Observation<'_> {
    /// A reference to this event for evidence.
    pub fn event_ref(&self) -> EventRef {
        EventRef::new(
            self.event.request_id.as_deref(),
            self.event.ts_ms,
            self.origin,
        )
    }
}

/// A detector: looks at an event with its token's state, appends findings.
pub trait Detector: Send {
    fn kind(&self) -> DetectorKind;

    /// Whether the detector keeps per-token state. Events later than the
    /// allowed lateness only reach stateless detectors.
    fn stateful(&self) -> bool;

    fn observe(&self, obs: &Observation<'_>, state: &mut TokenState, out: &mut Vec<Finding>);
}
