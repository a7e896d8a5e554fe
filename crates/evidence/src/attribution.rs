//! Attribution of source addresses: ASN, AS organisation, matched prefix, and the geolocated
//! and registered countries kept apart, from MaxMind databases (`maxminddb`). The registered
//! country chooses the recipient State; geolocation only corroborates it.

use crate::canon::sha256_hex;
use crate::error::{Error, Result};
use ipnet::IpNet;
use maxminddb::{geoip2, Reader};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where a lookup's answers came from, recorded in every package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbProvenance {
    /// `country`, `asn` or `anonymous-ip`.
    pub role: String,
    /// The file name (not the full path: the operator's layout is none of the recipient's
    /// business).
    pub file: String,
    /// The database's own `database_type`, e.g. `GeoLite2-Country`.
    pub database_type: String,
    /// Unix seconds when the database was built.
    pub build_epoch: u64,
    /// SHA-256 of the file, so a reviewer can ask for the very same data.
    pub sha256: String,
}

/// Anonymiser flags from a GeoIP2 Anonymous-IP database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnonymousFlags {
    pub vpn: bool,
    pub tor_exit: bool,
    pub public_proxy: bool,
    pub residential_proxy: bool,
    pub hosting_provider: bool,
}

impl AnonymousFlags {
    /// Whether the address hides its user (VPN, Tor, proxy): its registration then says where
    /// the anonymiser is, not where the activity comes from.
    pub fn hides_origin(&self) -> bool {
        self.vpn || self.tor_exit || self.public_proxy || self.residential_proxy
    }
}

/// What the databases say about one address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    pub addr: Option<IpAddr>,
    /// The most specific network the country database holds for the address.
    pub prefix: Option<IpNet>,
    pub asn: Option<u32>,
    pub as_org: Option<String>,
    /// The network the ASN database holds for the address (the routed prefix).
    pub asn_prefix: Option<IpNet>,
    /// Where MaxMind believes the address is located.
    pub geo_country: Option<String>,
    /// Where the address block is registered: the candidate recipient State.
    pub registered_country: Option<String>,
    /// The country a military base or embassy represents, if any.
    pub represented_country: Option<String>,
    pub anonymous: Option<AnonymousFlags>,
    /// GeoIP2 Country/City trait `is_anonymous_proxy`: the address hides its user's origin.
    #[serde(default)]
    pub anonymous_proxy: bool,
    /// GeoIP2 Country/City trait `is_satellite_provider`: the address serves users in many
    /// countries, so neither its registration nor its location says where the user is.
    #[serde(default)]
    pub satellite_provider: bool,
}

impl Attribution {
    /// Registration and geolocation name different countries (both known).
    pub fn location_disagrees(&self) -> bool {
        matches!((&self.registered_country, &self.geo_country), (Some(r), Some(g)) if r != g)
    }
}

/// The legacy GeoIP2 Country/City traits the `maxminddb` crate's model no longer carries;
/// MaxMind still ships them in Country and City databases.
#[derive(Debug, Default, Deserialize)]
struct LegacyTraits {
    #[serde(default)]
    traits: LegacyTraitFlags,
}

#[derive(Debug, Default, Deserialize)]
struct LegacyTraitFlags {
    #[serde(default)]
    is_anonymous_proxy: bool,
    #[serde(default)]
    is_satellite_provider: bool,
}

struct Db {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
    provenance: DbProvenance,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.path)
            .field("provenance", &self.provenance)
            .finish()
    }
}

/// The database files to open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GeoPaths {
    /// A Country or City database (GeoLite2/GeoIP2).
    pub country: PathBuf,
    /// An ASN (or ISP) database.
    pub asn: Option<PathBuf>,
    /// A GeoIP2 Anonymous-IP database.
    pub anonymous_ip: Option<PathBuf>,
}

/// The opened databases.
#[derive(Debug)]
pub struct GeoDb {
    country: Db,
    asn: Option<Db>,
    anon: Option<Db>,
}

fn open_db(path: &Path, role: &str, accepts: &[&str]) -> Result<Db> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let sha256 = sha256_hex(&bytes);
    let err = |message: String| Error::GeoDb {
        path: path.to_path_buf(),
        message,
    };
    let reader =
        Reader::from_source(bytes).map_err(|e| err(format!("not a valid database: {e}")))?;
    // A full structural check up front: a damaged file is refused when it is configured, not
    // discovered half-way through an attack.
    reader
        .verify()
        .map_err(|e| err(format!("damaged database: {e}")))?;
    let meta = reader.metadata();
    if !accepts.iter().any(|a| meta.database_type.contains(a)) {
        return Err(err(format!(
            "database type {:?} cannot serve as the {role} database (expected one containing {})",
            meta.database_type,
            accepts.join(" or ")
        )));
    }
    let provenance = DbProvenance {
        role: role.to_string(),
        file: path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        database_type: meta.database_type.clone(),
        build_epoch: meta.build_epoch,
        sha256,
    };
    Ok(Db {
        path: path.to_path_buf(),
        reader,
        provenance,
    })
}

fn to_ipnet(n: impl std::fmt::Display) -> Option<IpNet> {
    n.to_string().parse::<IpNet>().ok().map(|n| n.trunc())
}

impl Db {
    fn lookup_err(&self, addr: IpAddr, e: impl std::fmt::Display) -> Error {
        Error::Lookup {
            addr,
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}

impl GeoDb {
    /// Opens and checks the databases. A damaged file or one of the wrong type is an error
    /// naming the file.
    pub fn open(paths: &GeoPaths) -> Result<GeoDb> {
        let country = open_db(
            &paths.country,
            "country",
            &["Country", "City", "Enterprise"],
        )?;
        let asn = paths
            .asn
            .as_deref()
            .map(|p| open_db(p, "asn", &["ASN", "ISP"]))
            .transpose()?;
        let anon = paths
            .anonymous_ip
            .as_deref()
            .map(|p| open_db(p, "anonymous-ip", &["Anonymous-IP"]))
            .transpose()?;
        Ok(GeoDb { country, asn, anon })
    }

    /// The databases in use, for the package's provenance record.
    pub fn provenance(&self) -> Vec<DbProvenance> {
        let mut v = vec![self.country.provenance.clone()];
        v.extend(self.asn.iter().map(|d| d.provenance.clone()));
        v.extend(self.anon.iter().map(|d| d.provenance.clone()));
        v
    }

    /// Looks `addr` up in every database. An address no database knows gives an attribution
    /// with every field empty; a database that fails while decoding gives an error.
    pub fn lookup(&self, addr: IpAddr) -> Result<Attribution> {
        let mut a = Attribution {
            addr: Some(addr),
            ..Attribution::default()
        };
        let db = &self.country;
        let r = db.reader.lookup(addr).map_err(|e| db.lookup_err(addr, e))?;
        if r.has_data() {
            a.prefix = r.network().ok().and_then(to_ipnet);
            if let Some(c) = r
                .decode::<geoip2::Country>()
                .map_err(|e| db.lookup_err(addr, e))?
            {
                a.geo_country = c.country.iso_code.map(str::to_string);
                a.registered_country = c.registered_country.iso_code.map(str::to_string);
                a.represented_country = c.represented_country.iso_code.map(str::to_string);
            }
            if let Some(t) = r
                .decode::<LegacyTraits>()
                .map_err(|e| db.lookup_err(addr, e))?
            {
                a.anonymous_proxy = t.traits.is_anonymous_proxy;
                a.satellite_provider = t.traits.is_satellite_provider;
            }
        }
        if let Some(db) = &self.asn {
            let r = db.reader.lookup(addr).map_err(|e| db.lookup_err(addr, e))?;
            if r.has_data() {
                a.asn_prefix = r.network().ok().and_then(to_ipnet);
                if let Some(x) = r
                    .decode::<geoip2::Asn>()
                    .map_err(|e| db.lookup_err(addr, e))?
                {
                    a.asn = x.autonomous_system_number;
                    a.as_org = x.autonomous_system_organization.map(str::to_string);
                }
            }
        }
        if let Some(db) = &self.anon {
            let r = db.reader.lookup(addr).map_err(|e| db.lookup_err(addr, e))?;
            if r.has_data() {
                if let Some(x) = r
                    .decode::<geoip2::AnonymousIp>()
                    .map_err(|e| db.lookup_err(addr, e))?
                {
                    a.anonymous = Some(AnonymousFlags {
                        vpn: x.is_anonymous_vpn.unwrap_or(false),
                        tor_exit: x.is_tor_exit_node.unwrap_or(false),
                        public_proxy: x.is_public_proxy.unwrap_or(false),
                        residential_proxy: x.is_residential_proxy.unwrap_or(false),
                        hosting_provider: x.is_hosting_provider.unwrap_or(false),
                    });
                }
            }
        }
        Ok(a)
    }
}
