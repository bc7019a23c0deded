//! Functions rules may call, beside DataFusion's own.
//!
//! | function | returns |
//! |---|---|
//! | `cidr_contains(cidr, ip)` | whether `ip` is inside `cidr` (v4 or v6); NULL if either is NULL or invalid |
//! | `glob_match(pattern, text)` | whether `text` matches `pattern` (`*` any run, `?` one character, as scopes) |
//! | `is_private_ip(ip)` | loopback, RFC 1918, link-local, CGNAT 100.64/10, or IPv6 ULA |
//! | `is_anonymous_ip(ip)` | a VPN, hosting, proxy or Tor exit address per the Anonymous-IP database (`detectors.geoip.anonymous_db`) |
//!
//! A token's age is a column, `token_age_s`, not a function: it comes from
//! the token's state, which a pure function cannot see.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use ipnet::IpNet;
use maxminddb::Reader;

use crate::glob::Glob;

/// The Anonymous-IP database the engine currently uses; swapped on reload.
pub type AnonymousDb = Arc<RwLock<Option<Arc<Reader<Vec<u8>>>>>>;

/// Opens an Anonymous-IP database for rules alone (`rules test`, config
/// checks); the engine shares its GeoIP's instead. `None`: an empty slot.
pub fn open_anonymous_db(path: Option<&std::path::Path>) -> Result<AnonymousDb, String> {
    let reader = path
        .map(|p| Reader::open_readfile(p).map_err(|e| format!("{}: {e}", p.display())))
        .transpose()?;
    Ok(Arc::new(RwLock::new(reader.map(Arc::new))))
}

/// Every function, ready to register. `is_anonymous_ip` is left out when
/// no Anonymous-IP database is open, so a rule that calls it fails at
/// startup rather than on every batch.
pub fn all(anonymous: &AnonymousDb) -> Vec<ScalarUDF> {
    let utf8 = DataType::Utf8;
    let db = Arc::clone(anonymous);
    let has_db = anonymous.read().is_ok_and(|db| db.is_some());
    let mut udfs = vec![
        create_udf(
            "cidr_contains",
            vec![utf8.clone(), utf8.clone()],
            DataType::Boolean,
            Volatility::Immutable,
            Arc::new(|args| binary(args, cidr_contains)),
        ),
        create_udf(
            "glob_match",
            vec![utf8.clone(), utf8.clone()],
            DataType::Boolean,
            Volatility::Immutable,
            Arc::new(|args| binary(args, glob_match)),
        ),
        create_udf(
            "is_private_ip",
            vec![utf8.clone()],
            DataType::Boolean,
            Volatility::Immutable,
            Arc::new(|args| unary(args, |ip| ip.parse().ok().map(is_private))),
        ),
    ];
    if !has_db {
        return udfs;
    }
    udfs.push(create_udf(
        "is_anonymous_ip",
        vec![utf8],
        DataType::Boolean,
        // Stable, not immutable: the database can be reloaded.
        Volatility::Stable,
        Arc::new(move |args| {
            let reader = db.read().map_err(|_| poisoned())?.clone();
            let Some(reader) = reader else {
                return Err(DataFusionError::Execution(
                    "is_anonymous_ip needs detectors.geoip.anonymous_db".into(),
                ));
            };
            unary(args, |ip| {
                let ip: IpAddr = ip.parse().ok()?;
                Some(crate::geoip::anonymity(&reader, ip).any())
            })
        }),
    ));
    udfs
}

fn poisoned() -> DataFusionError {
    DataFusionError::Execution("the Anonymous-IP database lock is poisoned".into())
}

fn as_str(array: &ArrayRef) -> Result<&StringArray> {
    array
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DataFusionError::Internal("expected a Utf8 argument".into()))
}

/// Applies `f` to each row; NULL in, NULL out. Scalars arrive as repeated
/// arrays, so `f` sees the same first argument many times: callers cache
/// what they parse from it.
fn binary(
    args: &[ColumnarValue],
    mut f: impl FnMut(&str, &str) -> Option<bool>,
) -> Result<ColumnarValue> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let (a, b) = (as_str(&arrays[0])?, as_str(&arrays[1])?);
    let out: BooleanArray = (0..a.len())
        .map(|i| {
            if a.is_null(i) || b.is_null(i) {
                None
            } else {
                f(a.value(i), b.value(i))
            }
        })
        .collect();
    Ok(ColumnarValue::Array(Arc::new(out)))
}

fn unary(args: &[ColumnarValue], f: impl Fn(&str) -> Option<bool>) -> Result<ColumnarValue> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let a = as_str(&arrays[0])?;
    let out: BooleanArray = a.iter().map(|v| v.and_then(&f)).collect();
    Ok(ColumnarValue::Array(Arc::new(out)))
}

/// One parsed value, kept while the same text repeats (a literal argument).
struct Last<T> {
    text: String,
    value: T,
}

fn cached<T: Clone>(slot: &mut Option<Last<T>>, text: &str, parse: impl Fn(&str) -> T) -> T {
    match slot {
        Some(last) if last.text == text => last.value.clone(),
        _ => {
            let value = parse(text);
            *slot = Some(Last {
                text: text.to_string(),
                value: value.clone(),
            });
            value
        }
    }
}

fn cidr_contains_with(
    slot: &mut Option<Last<Option<IpNet>>>,
    cidr: &str,
    ip: &str,
) -> Option<bool> {
    let net = cached(slot, cidr, |c| {
        c.parse::<IpNet>()
            .ok()
            .or_else(|| c.parse::<IpAddr>().ok().map(IpNet::from))
    })?;
    let ip: IpAddr = ip.parse().ok()?;
    Some(net.contains(&ip))
}

fn cidr_contains(cidr: &str, ip: &str) -> Option<bool> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<Last<Option<IpNet>>>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with(|slot| cidr_contains_with(&mut slot.borrow_mut(), cidr, ip))
}

fn glob_match(pattern: &str, text: &str) -> Option<bool> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<Last<Arc<Glob>>>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with(|slot| {
        let glob = cached(&mut slot.borrow_mut(), pattern, |p| Arc::new(Glob::new(p)));
        Some(glob.matches(text))
    })
}

/// Addresses that never route on the public internet.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains_checks_v4_and_v6_and_rejects_garbage() {
        assert_eq!(cidr_contains("10.0.0.0/8", "10.1.2.3"), Some(true));
        assert_eq!(cidr_contains("10.0.0.0/8", "11.1.2.3"), Some(false));
        assert_eq!(cidr_contains("2001:db8::/32", "2001:db8::1"), Some(true));
        assert_eq!(cidr_contains("2001:db8::/32", "10.1.2.3"), Some(false));
        // A bare address is a /32 (or /128).
        assert_eq!(cidr_contains("192.0.2.7", "192.0.2.7"), Some(true));
        assert_eq!(cidr_contains("192.0.2.7", "192.0.2.8"), Some(false));
        assert_eq!(cidr_contains("not a net", "10.1.2.3"), None);
        assert_eq!(cidr_contains("10.0.0.0/8", "not an ip"), None);
        // The cache must not keep a previous network for a new text.
        assert_eq!(cidr_contains("11.0.0.0/8", "11.1.2.3"), Some(true));
    }

    #[test]
    fn glob_match_is_the_scope_glob() {
        assert_eq!(glob_match("s3:Get*", "s3:GetObject"), Some(true));
        assert_eq!(glob_match("s3:Get*", "s3:PutObject"), Some(false));
        assert_eq!(
            glob_match("GET /v1/orders/?", "GET /v1/orders/7"),
            Some(true)
        );
        assert_eq!(
            glob_match("GET /v1/orders/?", "GET /v1/orders/77"),
            Some(false)
        );
        assert_eq!(glob_match("*", ""), Some(true));
    }

    #[test]
    fn is_private_covers_the_reserved_ranges() {
        for ip in [
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "100.128.0.1", "2001:db8::1", "81.2.69.160"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn functions_map_nulls_to_null_over_arrays() {
        let udfs = all(&AnonymousDb::default());
        let cidr = udfs.iter().find(|u| u.name() == "cidr_contains").unwrap();
        let ips: ArrayRef = Arc::new(StringArray::from(vec![
            Some("10.0.0.1"),
            None,
            Some("8.8.8.8"),
        ]));
        let args = [
            ColumnarValue::Scalar("10.0.0.0/8".into()),
            ColumnarValue::Array(ips),
        ];
        let out = binary(&args, cidr_contains).unwrap().into_array(3).unwrap();
        let out = out.as_any().downcast_ref::<BooleanArray>().unwrap();
        assert_eq!(
            out.iter().collect::<Vec<_>>(),
            vec![Some(true), None, Some(false)]
        );
        assert_eq!(cidr.name(), "cidr_contains");
    }
}
