//! Binding: a call from outside the token's bound networks, or from another
//! device than the one it is bound to. Driven by token metadata; a token
//! with no binding is never checked.

use schemas::{DetectorKind, Evidence, Finding};

use crate::detector::{Detector, Observation};
use crate::state::TokenState;

pub struct BindingDetector;

impl Detector for BindingDetector {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Binding
    }

    fn stateful(&self) -> bool {
        false
    }

    fn observe(&self, obs: &Observation<'_>, _: &mut TokenState, out: &mut Vec<Finding>) {
        let Some(meta) = obs.metadata else { return };
        let e = obs.event;
        if let (Some(nets), Some(ip)) = (&meta.bound_cidrs, e.src_ip)
            && !nets.iter().any(|n| n.contains(&ip))
        {
            let bound: Vec<String> = nets.iter().map(ToString::to_string).collect();
            let evidence = Evidence {
                events: vec![obs.event_ref()],
                ..Default::default()
            }
            .fact("src_ip", ip.to_string())
            .fact("bound_cidrs", bound.clone())
            .fact("country", e.country.as_deref().unwrap_or_default());
            let summary = format!(
                "call from {ip}, outside the bound networks {}",
                bound.join(", ")
            );
            out.push(Finding::new(
                DetectorKind::Binding,
                "outside_bound_cidr",
                1.0,
                summary,
                evidence,
            ));
        }
        if let (Some(bound), Some(device)) = (&meta.bound_device, e.device_id.as_deref())
            && bound != device
        {
            let evidence = Evidence {
                events: vec![obs.event_ref()],
                ..Default::default()
            }
            .fact("device_id", device)
            .fact("bound_device", bound.as_str());
            let summary = format!("call from device {device}, but the token is bound to {bound}");
            out.push(Finding::new(
                DetectorKind::Binding,
                "device_drift",
                0.9,
                summary,
                evidence,
            ));
        }
    }
}

#[cfg(test)]
mod tests;
