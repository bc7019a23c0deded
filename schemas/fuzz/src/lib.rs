//! What every decoder fuzz target checks: decoding never panics, and
//! whatever it accepts is a whole event that survives the canonical JSON
//! round trip unchanged (so nothing a decoder produces is lost downstream).

use schemas::decode::{Decoder, Limits, Output, Skew};
use schemas::{Fingerprinter, Format};

/// A fixed wall clock, so a run is reproducible.
const NOW_MS: i64 = 1_795_800_000_000;

pub fn check(format: Format, data: &[u8]) {
    let decoder = Decoder::new(format, 64 << 10, Fingerprinter::new(b"fuzz"))
        .with_limits(Limits::default())
        .with_skew(Skew::ANY);
    let mut out = Output::default();
    let result = decoder.decode_at(data, NOW_MS, &mut out);
    if result.is_err() {
        assert_eq!(out, Output::default(), "a refused record left something behind");
        return;
    }
    let outcomes = out.events.len() + out.rejected.len() + out.skipped as usize;
    assert!(
        outcomes == 1 || format == Format::Cloudtrail,
        "one record gave {outcomes} outcomes"
    );
    for r in &out.rejected {
        assert!(
            serde_json::from_slice::<serde_json::Value>(&r.element).is_ok(),
            "a refused element is not JSON"
        );
    }
    let out = out.events;
    let canonical = Decoder::new(Format::Canonical, usize::MAX, Fingerprinter::new(b"fuzz"))
        .with_skew(Skew::ANY);
    for d in &out {
        let e = &d.event;
        assert!(!e.token_id.is_empty() && !e.action.is_empty());
        assert!(format != Format::Canonical || !e.issuer.is_empty());
        if e.issuer.is_empty() {
            continue; // canonical events need an issuer; a vendor default of "" is not one
        }
        let again = canonical
            .decode(e.to_json().as_bytes())
            .unwrap_or_else(|err| panic!("{err}: {}", e.to_json()));
        assert_eq!(
            &again.event, e,
            "the canonical round trip changed the event"
        );
    }
}
