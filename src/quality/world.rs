//! Real geography for the quality benchmark: random public IPv4 addresses
//! looked up in the real databases (DB-IP Lite and an ASN file), kept
//! with what they say and what kind of network they are on. Nothing here
//! uses the detectors' travel logic: places are picked by country, city,
//! ASN and network kind, and distances in the scorer's own haversine.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use detectors::GeoIp;
use detectors::networks::{NetworkKind, Networks, NetworksConfig};
use schemas::sample::Rng;

/// One located address.
#[derive(Debug, Clone)]
pub struct Place {
    pub ip: IpAddr,
    pub country: String,
    pub city: String,
    pub lat: f64,
    pub lon: f64,
    pub asn: u32,
    pub kind: NetworkKind,
}

/// Every sampled place, indexed.
pub struct World {
    pub places: Vec<Place>,
    /// By (ASN, country): the places of one network in one country.
    pub by_network: HashMap<(u32, String), Vec<usize>>,
}

/// Great-circle km, computed here rather than with the detector's own
/// function, so a bug there cannot hide in the benchmark or the demo.
pub fn great_circle_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let r = 6371.0;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * r * h.sqrt().min(1.0).asin()
}

/// [`great_circle_km`] between two places.
pub fn km(a: &Place, b: &Place) -> f64 {
    great_circle_km(a.lat, a.lon, b.lat, b.lon)
}

fn public(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || o[0] == 0
        || o[0] >= 224
        || (o[0] == 100 && (64..128).contains(&o[1])))
}

impl World {
    /// Samples `samples` random public IPv4 addresses.
    pub fn sample(geoip: &mut GeoIp, samples: usize, seed: u64) -> World {
        let networks = Networks::new(&NetworksConfig::default());
        let mut rng = Rng(seed);
        let mut places = Vec::new();
        let mut by_network: HashMap<(u32, String), Vec<usize>> = HashMap::new();
        for _ in 0..samples {
            let ip = Ipv4Addr::from(rng.next_u64() as u32);
            if !public(ip) {
                continue;
            }
            let g = geoip.lookup_uncached(IpAddr::V4(ip));
            let (Some(country), Some(lat), Some(lon), Some(asn)) = (g.country, g.lat, g.lon, g.asn)
            else {
                continue;
            };
            let kind = networks.classify(Some(asn), g.as_org.as_deref());
            by_network
                .entry((asn, country.to_string()))
                .or_default()
                .push(places.len());
            places.push(Place {
                ip: IpAddr::V4(ip),
                country: country.to_string(),
                city: g.city.as_deref().unwrap_or_default().to_owned(),
                lat,
                lon,
                asn,
                kind,
            });
        }
        World { places, by_network }
    }

    /// Places of one kind.
    pub fn of_kind(&self, kind: NetworkKind) -> Vec<&Place> {
        self.places.iter().filter(|p| p.kind == kind).collect()
    }

    /// Networks (ASN in a country) of `kind` with at least `n` places in
    /// distinct cities, as lists of those places.
    pub fn spread_networks(&self, kind: NetworkKind, n: usize) -> Vec<Vec<&Place>> {
        let mut out: Vec<Vec<&Place>> = self
            .by_network
            .values()
            .filter_map(|ix| {
                let mut cities: Vec<&Place> = Vec::new();
                for &i in ix {
                    let p = &self.places[i];
                    if p.kind == kind && !cities.iter().any(|c| c.city == p.city) {
                        cities.push(p);
                    }
                }
                (cities.len() >= n).then_some(cities)
            })
            .collect();
        // Deterministic order (HashMap iteration is not).
        out.sort_by_key(|v| (v[0].asn, v[0].country.clone()));
        out
    }

    /// A place of `kind` at least `min_km` from `from` (and, if `same_country`,
    /// in its country, else outside it).
    pub fn away<'a>(
        &'a self,
        from: &Place,
        kind: NetworkKind,
        min_km: f64,
        same_country: bool,
        rng: &mut Rng,
    ) -> Option<&'a Place> {
        let candidates: Vec<&Place> = self
            .places
            .iter()
            .filter(|p| {
                p.kind == kind
                    && p.asn != from.asn
                    && (p.country == from.country) == same_country
                    && km(from, p) >= min_km
            })
            .collect();
        (!candidates.is_empty()).then(|| candidates[rng.below(candidates.len() as u64) as usize])
    }
}
