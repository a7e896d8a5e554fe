//! Evidence packages for cross-State mitigation requests: attribution of alert sources, the
//! choice of recipient State, the package itself (STIX 2.1, MISP, flows, the request letter,
//! the custody log, a signed manifest) and its verification.
//!
//! The builder is pure: given an alert, its flows, the attributions, the recipient and an
//! injected time, it produces the same bytes every time. Only [`attribution::GeoDb::open`],
//! [`keys`] and the write/read helpers of [`package`] and [`verify`] touch the file system.

pub mod attribution;
pub mod campaign;
pub mod canon;
pub mod config;
pub mod custody;
pub mod deliver;
pub mod dsse;
pub mod error;
pub mod followup;
pub mod keys;
pub mod letter;
pub mod misp;
pub mod package;
pub mod packager;
pub mod recipients;
pub mod sample;
pub mod stix;
pub mod store;
pub mod tlp;
pub mod verify;

pub use error::{Error, Result};

/// The version written into custody entries and manifests as the packaging tool's version.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The packaging tool's name in custody entries and manifests.
pub const TOOL_NAME: &str = "normwatch-evidence";
