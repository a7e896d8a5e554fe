//! Protected assets: the public services normwatch watches, and the index that finds the asset
//! a flow touches.

use hashbrown::HashMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// Stable asset identifier (used as Kafka key and metric label).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AssetId(#[serde(deserialize_with = "crate::intern::asset")] pub Arc<str>);

impl AssetId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Critical-infrastructure sector of an asset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sector {
    Energy,
    Water,
    Health,
    Transport,
    Telecom,
    Finance,
    Government,
    Csirt,
    Other,
}

impl Sector {
    pub const ALL: [Sector; 9] = [
        Sector::Energy,
        Sector::Water,
        Sector::Health,
        Sector::Transport,
        Sector::Telecom,
        Sector::Finance,
        Sector::Government,
        Sector::Csirt,
        Sector::Other,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Sector::Energy => "energy",
            Sector::Water => "water",
            Sector::Health => "health",
            Sector::Transport => "transport",
            Sector::Telecom => "telecom",
            Sector::Finance => "finance",
            Sector::Government => "government",
            Sector::Csirt => "csirt",
            Sector::Other => "other",
        }
    }

    /// Parses the config spelling.
    pub fn parse(s: &str) -> Option<Sector> {
        Sector::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// What an asset is, for the rules that depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Operational technology: controllers, RTUs, SCADA servers.
    Ot,
    /// A computer security incident response team (norm 13(k) protects it).
    Csirt,
    /// Holds intellectual property (the exfiltration rule applies).
    HoldsIp,
    /// Provides a service directly to the public.
    PublicService,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Ot, Role::Csirt, Role::HoldsIp, Role::PublicService];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Ot => "ot",
            Role::Csirt => "csirt",
            Role::HoldsIp => "holds-ip",
            Role::PublicService => "public-service",
        }
    }

    /// Parses the config spelling.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Rate limits of one traffic class towards an asset; `None` is not checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    /// Packets per second.
    pub pps: Option<u64>,
    /// Bits per second.
    pub bps: Option<u64>,
    /// New flows per second.
    pub new_flows_per_s: Option<u64>,
}

impl Rates {
    pub fn is_empty(&self) -> bool {
        self.pps.is_none() && self.bps.is_none() && self.new_flows_per_s.is_none()
    }
}

/// Static detection thresholds of an asset: for all its traffic and per protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    pub total: Rates,
    pub tcp: Rates,
    pub udp: Rates,
    pub icmp: Rates,
}

/// A protected asset: a public service and the address ranges that provide it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub id: AssetId,
    pub name: String,
    pub operator: String,
    pub sector: Sector,
    /// The public service it provides, in words an authority can quote.
    pub service: String,
    pub cidrs: Vec<IpNet>,
    pub roles: Vec<Role>,
    /// Ports on which it serves the public (the service-impairment rule watches them).
    pub service_ports: Vec<u16>,
    /// Static thresholds; a learned baseline applies where none is set.
    pub thresholds: Thresholds,
    /// Sources allowed to send write, control, stop/restart or program commands to it (ICS
    /// masters, engineering stations).
    pub allow: Vec<IpNet>,
}

impl Asset {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether `addr` may send industrial commands to this asset.
    pub fn allows(&self, addr: IpAddr) -> bool {
        self.allow.iter().any(|n| n.contains(&addr))
    }
}

/// Which side of a flow the matched asset is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    Orig,
    Resp,
}

/// The asset a flow touches and on which side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetMatch {
    pub id: AssetId,
    pub side: Side,
}

/// Longest-prefix index from addresses to assets. One hash map per distinct prefix length, so
/// a lookup costs at most one probe per length in use (a handful in practice), whatever the
/// number of assets.
#[derive(Clone, Debug, Default)]
pub struct AssetIndex {
    assets: Vec<Asset>,
    /// (prefix length, network bits → asset index), longest first.
    v4: Vec<(u8, HashMap<u32, u32>)>,
    v6: Vec<(u8, HashMap<u128, u32>)>,
}

/// Two assets claim the very same prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicatePrefix {
    pub prefix: IpNet,
    pub first: AssetId,
    pub second: AssetId,
}

impl fmt::Display for DuplicatePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "prefix {} is claimed by both asset {:?} and asset {:?}",
            self.prefix, self.first, self.second
        )
    }
}

impl std::error::Error for DuplicatePrefix {}

fn mask4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl AssetIndex {
    /// Builds the index. Nested prefixes are fine (the longest wins); the same prefix on two
    /// assets is an error.
    pub fn new(assets: Vec<Asset>) -> Result<Self, Vec<DuplicatePrefix>> {
        let mut v4: HashMap<u8, HashMap<u32, u32>> = HashMap::new();
        let mut v6: HashMap<u8, HashMap<u128, u32>> = HashMap::new();
        let mut dups = Vec::new();
        for (i, asset) in assets.iter().enumerate() {
            let idx = u32::try_from(i).expect("fewer than 2^32 assets");
            for net in &asset.cidrs {
                let prev = match net.trunc() {
                    IpNet::V4(n) => v4
                        .entry(n.prefix_len())
                        .or_default()
                        .insert(u32::from(n.network()), idx),
                    IpNet::V6(n) => v6
                        .entry(n.prefix_len())
                        .or_default()
                        .insert(u128::from(n.network()), idx),
                };
                if let Some(prev) = prev.filter(|p| *p != idx) {
                    dups.push(DuplicatePrefix {
                        prefix: net.trunc(),
                        first: assets[prev as usize].id.clone(),
                        second: asset.id.clone(),
                    });
                }
            }
        }
        if !dups.is_empty() {
            return Err(dups);
        }
        let mut v4: Vec<_> = v4.into_iter().collect();
        v4.sort_by_key(|e| std::cmp::Reverse(e.0));
        let mut v6: Vec<_> = v6.into_iter().collect();
        v6.sort_by_key(|e| std::cmp::Reverse(e.0));
        Ok(AssetIndex { assets, v4, v6 })
    }

    /// The assets, in config order.
    pub fn assets(&self) -> &[Asset] {
        &self.assets
    }

    /// The asset at `idx` (as returned by [`AssetIndex::lookup`]).
    pub fn get(&self, idx: u32) -> &Asset {
        &self.assets[idx as usize]
    }

    /// Whether no asset is configured.
    pub fn is_empty(&self) -> bool {
        self.assets.is_empty()
    }

    /// Index and prefix length of the asset whose longest prefix covers `addr`.
    #[inline]
    pub fn lookup(&self, addr: IpAddr) -> Option<(u32, u8)> {
        match addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                self.v4
                    .iter()
                    .find_map(|(len, map)| map.get(&(bits & mask4(*len))).map(|i| (*i, *len)))
            }
            IpAddr::V6(a) => {
                if let Some(v4) = a.to_ipv4_mapped() {
                    return self.lookup(IpAddr::V4(v4));
                }
                let bits = u128::from(a);
                self.v6
                    .iter()
                    .find_map(|(len, map)| map.get(&(bits & mask6(*len))).map(|i| (*i, *len)))
            }
        }
    }

    /// The asset a flow touches: the responder's if it is protected (the usual target), else
    /// the originator's (an asset reaching out, as in exfiltration).
    pub fn match_flow(&self, orig: IpAddr, resp: IpAddr) -> Option<AssetMatch> {
        let (idx, side) = match self.lookup(resp) {
            Some((i, _)) => (i, Side::Resp),
            None => (self.lookup(orig)?.0, Side::Orig),
        };
        Some(AssetMatch {
            id: self.get(idx).id.clone(),
            side,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(id: &str, cidrs: &[&str]) -> Asset {
        Asset {
            id: AssetId(id.into()),
            name: id.into(),
            operator: "op".into(),
            sector: Sector::Energy,
            service: "svc".into(),
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            roles: vec![],
            service_ports: vec![],
            thresholds: Thresholds::default(),
            allow: vec![],
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let idx = AssetIndex::new(vec![
            asset("wide", &["10.0.0.0/8", "2001:db8::/32"]),
            asset("narrow", &["10.10.10.0/24", "2001:db8:10::/48"]),
        ])
        .unwrap();
        let name = |a: &str| {
            idx.lookup(a.parse().unwrap())
                .map(|(i, _)| idx.get(i).id.to_string())
        };
        assert_eq!(name("10.10.10.7").as_deref(), Some("narrow"));
        assert_eq!(name("10.10.11.7").as_deref(), Some("wide"));
        assert_eq!(name("11.0.0.1"), None);
        assert_eq!(name("2001:db8:10::5").as_deref(), Some("narrow"));
        assert_eq!(name("2001:db8:11::5").as_deref(), Some("wide"));
        assert_eq!(name("::ffff:10.10.10.1").as_deref(), Some("narrow"));
    }

    #[test]
    fn responder_preferred_then_originator() {
        let idx = AssetIndex::new(vec![asset("a", &["192.0.2.0/24"])]).unwrap();
        let m = idx
            .match_flow(
                "198.51.100.1".parse().unwrap(),
                "192.0.2.9".parse().unwrap(),
            )
            .unwrap();
        assert_eq!(m.side, Side::Resp);
        let m = idx
            .match_flow(
                "192.0.2.9".parse().unwrap(),
                "198.51.100.1".parse().unwrap(),
            )
            .unwrap();
        assert_eq!(m.side, Side::Orig);
        assert!(idx
            .match_flow(
                "198.51.100.1".parse().unwrap(),
                "198.51.100.2".parse().unwrap()
            )
            .is_none());
    }

    #[test]
    fn duplicate_prefix_rejected() {
        let err = AssetIndex::new(vec![
            asset("a", &["192.0.2.0/24"]),
            asset("b", &["192.0.2.1/24"]),
        ])
        .unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].prefix.to_string(), "192.0.2.0/24");
    }
}
