//! GeoIP reloads of the engine: on this thread, or opened elsewhere (off
//! the hot path) and installed between batches.

use super::Engine;
use crate::geoip::{GeoIp, GeoIpError};

/// A GeoIP reload to run off the detect task: open `config` on a blocking
/// thread, then [`Engine::install_geoip`]. `stamps` identify the files
/// tried, so a file that failed is tried again only once it changes.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoIpReloadJob {
    pub config: crate::geoip::GeoIpConfig,
    pub stamps: Vec<Option<(std::time::SystemTime, u64)>>,
}

impl Engine {
    /// Re-opens the GeoIP databases if their files changed. Returns whether
    /// it reloaded; on error the old databases stay in use.
    pub fn reload_geoip_if_changed(&mut self) -> Result<bool, GeoIpError> {
        match self.geoip.as_ref() {
            Some(g) if g.changed_on_disk() => self.reload_geoip().map(|()| true),
            _ => Ok(false),
        }
    }

    /// Re-opens the GeoIP databases unconditionally, on this thread.
    pub fn reload_geoip(&mut self) -> Result<(), GeoIpError> {
        let Some(config) = self.geoip.as_ref().and_then(|g| g.reload_config()) else {
            return Ok(());
        };
        let fresh = GeoIp::open(&config.clone())?;
        self.install_geoip(fresh);
        Ok(())
    }

    /// What a reload off the hot path needs: the config to open and the
    /// files' stamps now (to remember a failed attempt by). `None` when
    /// there is nothing to reload, or `only_if_changed` and nothing changed.
    pub fn geoip_reload_job(&self, only_if_changed: bool) -> Option<GeoIpReloadJob> {
        self.geoip.as_ref()?.reload_job(only_if_changed)
    }

    /// Puts databases opened elsewhere in use, counters kept.
    pub fn install_geoip(&mut self, fresh: GeoIp) {
        let Some(geoip) = self.geoip.as_mut() else {
            return;
        };
        geoip.replace(fresh);
        if let Ok(mut slot) = self.anonymous.write() {
            *slot = geoip.anonymous_reader();
        }
    }

    /// The GeoIP databases in use.
    pub fn geoip(&self) -> Option<&GeoIp> {
        self.geoip.as_ref()
    }
}

impl GeoIp {
    /// See [`Engine::geoip_reload_job`].
    pub fn reload_job(&self, only_if_changed: bool) -> Option<GeoIpReloadJob> {
        if only_if_changed && !self.changed_on_disk() {
            return None;
        }
        Some(GeoIpReloadJob {
            config: self.reload_config()?.clone(),
            stamps: self.disk_stamps(),
        })
    }
}
