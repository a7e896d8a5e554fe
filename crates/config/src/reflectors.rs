//! The reflector catalogue (`config/reflectors.toml`, built in; `[detect] reflectors` names a
//! replacement): the services whose unsolicited responses count as reflection.
//!
//! - `[[reflector]]`: `proto` (`udp` or `tcp`), `port` (the source port responses come
//!   from), `name` (shown in alerts).
//!
//! Every entry names a distinct protocol and port; there is at least one.

use crate::diag::{ConfigError, Diagnostics};
use serde::Deserialize;
use std::path::Path;

/// The catalogue built into normwatch.
const BUILT_IN: &str = include_str!("../../../config/reflectors.toml");

/// Most entries a catalogue may hold.
pub const MAX_REFLECTORS: usize = 1024;

/// IP protocol numbers of the transports a reflector answers over.
pub const UDP: u8 = 17;
pub const TCP: u8 = 6;

/// One reflector protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reflector {
    /// IP protocol: [`UDP`] or [`TCP`].
    pub proto: u8,
    /// The source port its responses come from.
    pub port: u16,
    pub name: String,
}

/// A validated catalogue, with a lookup by protocol and port: a bit per port says whether any
/// entry has it, so a port of none (nearly every record) costs one load.
#[derive(Clone, PartialEq, Eq)]
pub struct Reflectors {
    /// Sorted by protocol and port.
    list: Vec<Reflector>,
    udp: Box<[u64; 1024]>,
    tcp: Box<[u64; 1024]>,
}

impl std::fmt::Debug for Reflectors {
    /// The entries; the lookup bits are derived from them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reflectors")
            .field("list", &self.list)
            .finish_non_exhaustive()
    }
}

impl Default for Reflectors {
    /// The built-in catalogue.
    fn default() -> Self {
        Reflectors::built_in()
    }
}

impl Reflectors {
    /// The catalogue built into normwatch (`config/reflectors.toml`).
    pub fn built_in() -> Reflectors {
        parse_reflectors(BUILT_IN, Path::new("built-in reflectors.toml"))
            .expect("the built-in reflector catalogue is valid")
    }

    fn new(mut list: Vec<Reflector>) -> Reflectors {
        list.sort_by_key(|r| (r.proto, r.port));
        let mut udp = Box::new([0u64; 1024]);
        let mut tcp = Box::new([0u64; 1024]);
        for r in &list {
            let bits = if r.proto == UDP { &mut udp } else { &mut tcp };
            bits[usize::from(r.port / 64)] |= 1 << (r.port % 64);
        }
        Reflectors { list, udp, tcp }
    }

    /// The entries, sorted by protocol and port; [`Reflectors::lookup`] gives positions in
    /// this list.
    pub fn list(&self) -> &[Reflector] {
        &self.list
    }

    /// The position of the reflector answering over `proto` from `port`, if one is listed.
    #[inline]
    pub fn lookup(&self, proto: u8, port: u16) -> Option<usize> {
        let bits = match proto {
            UDP => &self.udp,
            TCP => &self.tcp,
            _ => return None,
        };
        if bits[usize::from(port / 64)] & (1 << (port % 64)) == 0 {
            return None;
        }
        self.list
            .binary_search_by_key(&(proto, port), |r| (r.proto, r.port))
            .ok()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogue {
    #[serde(default)]
    reflector: Vec<RawReflector>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReflector {
    proto: String,
    port: i64,
    name: String,
}

/// Reads and validates the catalogue at `path`.
pub fn load_reflectors(path: &Path) -> Result<Reflectors, ConfigError> {
    let text = crate::diag::read_file(path)?;
    parse_reflectors(&text, path)
}

/// Validates catalogue text; `origin` names it in diagnostics.
pub fn parse_reflectors(text: &str, origin: &Path) -> Result<Reflectors, ConfigError> {
    let raw: RawCatalogue = crate::diag::parse_toml(text, origin)?;
    let mut d = Diagnostics::new(origin);
    if raw.reflector.is_empty() {
        d.push("reflector", "the catalogue lists no reflector");
    }
    if raw.reflector.len() > MAX_REFLECTORS {
        d.push(
            "reflector",
            format!(
                "{} entries; accepted: at most {MAX_REFLECTORS}",
                raw.reflector.len()
            ),
        );
    }
    let mut list: Vec<Reflector> = Vec::new();
    for (i, r) in raw.reflector.iter().enumerate() {
        let key = |f: &str| format!("reflector[{i}].{f}");
        let proto = match r.proto.as_str() {
            "udp" => Some(UDP),
            "tcp" => Some(TCP),
            other => {
                d.push(key("proto"), format!("{other:?} is not one of udp, tcp"));
                None
            }
        };
        let port = match u16::try_from(r.port) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                d.push(
                    key("port"),
                    format!("{} is not a port (1 to 65535)", r.port),
                );
                None
            }
        };
        if r.name.trim().is_empty() {
            d.push(key("name"), "must not be empty");
        }
        if let (Some(proto), Some(port)) = (proto, port) {
            if list.iter().any(|x| x.proto == proto && x.port == port) {
                d.push(
                    key("port"),
                    format!("{} {port} is already in the catalogue", r.proto),
                );
            } else {
                list.push(Reflector {
                    proto,
                    port,
                    name: r.name.trim().to_string(),
                });
            }
        }
    }
    if !d.is_empty() {
        return Err(ConfigError::Invalid(d));
    }
    Ok(Reflectors::new(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalogue_covers_the_public_amplification_vector_lists() {
        let r = Reflectors::built_in();
        // CISA TA14-017A and the vectors reported since.
        for port in [
            17, 19, 53, 69, 111, 123, 137, 161, 389, 427, 500, 520, 1194, 1434, 1900, 3283, 3702,
            4500, 5353, 5683, 10001, 11211, 27015, 33848, 37810,
        ] {
            let i = r.lookup(UDP, port).unwrap_or_else(|| panic!("udp {port}"));
            assert_eq!((r.list()[i].proto, r.list()[i].port), (UDP, port));
        }
        assert!(r.lookup(TCP, 80).is_some());
        for (proto, port) in [(UDP, 80), (UDP, 443), (UDP, 40_000), (TCP, 40_000), (1, 53)] {
            assert_eq!(r.lookup(proto, port), None, "{proto} {port}");
        }
        // The lookup agrees with the list for every port.
        for port in 0..=u16::MAX {
            let listed = r
                .list()
                .iter()
                .position(|x| x.proto == UDP && x.port == port);
            assert_eq!(r.lookup(UDP, port), listed, "udp {port}");
        }
    }

    #[test]
    fn every_mistake_of_a_catalogue_is_reported_with_its_key() {
        let text = "[[reflector]]\nproto = \"sctp\"\nport = 0\nname = \"\"\n\n[[reflector]]\nproto = \"udp\"\nport = 53\nname = \"DNS\"\n\n[[reflector]]\nproto = \"udp\"\nport = 53\nname = \"again\"\n";
        let e = parse_reflectors(text, Path::new("r.toml"))
            .unwrap_err()
            .to_string();
        for want in [
            "reflector[0].proto",
            "reflector[0].port",
            "reflector[0].name",
            "reflector[2].port: udp 53 is already",
        ] {
            assert!(e.contains(want), "{want} in {e}");
        }
        assert!(parse_reflectors("", Path::new("r.toml")).is_err());
        let one = parse_reflectors(
            "[[reflector]]\nproto = \"udp\"\nport = 9999\nname = \"X\"\n",
            Path::new("r.toml"),
        )
        .unwrap();
        assert_eq!(one.lookup(UDP, 9999), Some(0));
        assert_eq!(one.lookup(UDP, 53), None);
    }
}
