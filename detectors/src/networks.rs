//! Which networks geolocate poorly: cloud, hosting and CI providers (whose
//! runners hop regions all day) and mobile carriers (whose addresses are
//! placed wherever the carrier's gateway is). Travel that involves them is
//! low-confidence: it may alert, never revoke by itself.
//!
//! Recognised without an Anonymous-IP database, by a shipped list of AS
//! numbers (below, documented in the README) plus words in the AS
//! organisation name. Users add their own, or turn the shipped list off.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// Cloud, hosting and CI providers' AS numbers.
pub const SHIPPED_HOSTING_ASNS: &[u32] = &[
    16509, 14618, 8987, 38895, // Amazon (AWS)
    15169, 396982, 19527, 36040, // Google, Google Cloud
    8075, 8068, 8069, 12076, // Microsoft, Azure
    36459, // GitHub (Actions runners, hooks)
    31898, // Oracle Cloud
    36351, // IBM Cloud (SoftLayer)
    45102, 37963, // Alibaba Cloud
    132203, 45090,  // Tencent Cloud
    136907, // Huawei Cloud
    14061,  // DigitalOcean
    63949,  // Akamai Connected Cloud (Linode)
    20473,  // Vultr (Choopa)
    16276,  // OVHcloud
    24940,  // Hetzner
    12876,  // Scaleway
    51167,  // Contabo
    13335,  // Cloudflare
    54113,  // Fastly
    20940, 16625, // Akamai
    60781, 16265, // Leaseweb
    54825, // Equinix Metal
    19994, 27357,  // Rackspace
    40509,  // Fly.io
    200350, // Yandex Cloud
];

/// Mobile carriers' AS numbers (networks that are mostly mobile).
pub const SHIPPED_MOBILE_ASNS: &[u32] = &[
    21928, // T-Mobile US
    22394, 6167,   // Verizon Wireless
    20057,  // AT&T Mobility
    10507,  // Sprint
    6430,   // US Cellular
    25135,  // Vodafone UK
    30722,  // Vodafone Italy
    12430,  // Vodafone Spain
    12576,  // EE (UK)
    206067, // Three UK
    35228,  // O2 UK
    51207,  // Free Mobile (FR)
    4804,   // Optus (AU)
    55836,  // Reliance Jio (IN)
    45609,  // Bharti Airtel mobile (IN)
    38266,  // Vodafone Idea (IN)
    9808, 56040, 56041, 56042, 56044, 56046, 56047, 56048, // China Mobile
    9605,  // NTT Docomo (JP)
    26615, // TIM Brasil
    27831, // Claro/Comcel (CO)
    8151,  // Telcel (MX)
];

/// Words in an AS organisation name that mark a kind of network.
const HOSTING_WORDS: &[&str] = &[
    "amazon",
    "google",
    "microsoft",
    "azure",
    "digitalocean",
    "linode",
    "hetzner",
    "ovh",
    "vultr",
    "choopa",
    "oracle",
    "alibaba",
    "tencent",
    "hosting",
    "cloud",
    "datacenter",
    "data center",
    "server",
    "vps",
];
const MOBILE_WORDS: &[&str] = &["mobile", "wireless", "cellular", "mobility"];

/// `[detectors.networks]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworksConfig {
    /// Use the shipped lists of cloud/hosting/CI and mobile AS numbers
    /// (README, "Networks"). Off: only the lists below count.
    #[serde(default = "yes")]
    pub shipped_lists: bool,
    /// More cloud, hosting or CI AS numbers.
    #[serde(default)]
    pub hosting_asns: Vec<u32>,
    /// More mobile carrier AS numbers.
    #[serde(default)]
    pub mobile_asns: Vec<u32>,
    /// Also recognise them by words in the AS organisation name
    /// ("cloud", "hosting", "mobile", "wireless"...).
    #[serde(default = "yes")]
    pub by_org_name: bool,
}

fn yes() -> bool {
    true
}

impl Default for NetworksConfig {
    fn default() -> Self {
        NetworksConfig {
            shipped_lists: true,
            hosting_asns: Vec::new(),
            mobile_asns: Vec::new(),
            by_org_name: true,
        }
    }
}

/// What kind of network an address is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkKind {
    Hosting,
    Mobile,
    Other,
}

impl NetworkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkKind::Hosting => "hosting",
            NetworkKind::Mobile => "mobile",
            NetworkKind::Other => "other",
        }
    }
}

/// The compiled lists.
#[derive(Debug, Clone)]
pub struct Networks {
    hosting: HashSet<u32>,
    mobile: HashSet<u32>,
    by_org_name: bool,
}

impl Networks {
    pub fn new(config: &NetworksConfig) -> Self {
        let shipped = |list: &'static [u32]| {
            config
                .shipped_lists
                .then_some(list)
                .into_iter()
                .flatten()
                .copied()
        };
        Networks {
            hosting: shipped(SHIPPED_HOSTING_ASNS)
                .chain(config.hosting_asns.iter().copied())
                .collect(),
            mobile: shipped(SHIPPED_MOBILE_ASNS)
                .chain(config.mobile_asns.iter().copied())
                .collect(),
            by_org_name: config.by_org_name,
        }
    }

    pub fn classify(&self, asn: Option<u32>, org: Option<&str>) -> NetworkKind {
        if let Some(asn) = asn {
            if self.hosting.contains(&asn) {
                return NetworkKind::Hosting;
            }
            if self.mobile.contains(&asn) {
                return NetworkKind::Mobile;
            }
        }
        if let Some(org) = org.filter(|_| self.by_org_name) {
            let org = org.to_ascii_lowercase();
            if MOBILE_WORDS.iter().any(|w| org.contains(w)) {
                return NetworkKind::Mobile;
            }
            if HOSTING_WORDS.iter().any(|w| org.contains(w)) {
                return NetworkKind::Hosting;
            }
        }
        NetworkKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_lists_names_and_overrides() {
        let n = Networks::new(&NetworksConfig::default());
        assert_eq!(n.classify(Some(16509), None), NetworkKind::Hosting);
        assert_eq!(n.classify(Some(21928), None), NetworkKind::Mobile);
        assert_eq!(
            n.classify(Some(3320), Some("Deutsche Telekom AG")),
            NetworkKind::Other
        );
        assert_eq!(
            n.classify(Some(64512), Some("Example Cloud Hosting Ltd")),
            NetworkKind::Hosting
        );
        assert_eq!(
            n.classify(Some(64513), Some("ACME WIRELESS")),
            NetworkKind::Mobile
        );
        let own = Networks::new(&NetworksConfig {
            shipped_lists: false,
            hosting_asns: vec![64512],
            by_org_name: false,
            ..Default::default()
        });
        assert_eq!(
            own.classify(Some(16509), Some("Amazon")),
            NetworkKind::Other
        );
        assert_eq!(own.classify(Some(64512), None), NetworkKind::Hosting);
    }
}
