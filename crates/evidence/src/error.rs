//! The errors of this crate: every bad input becomes one of these, never a panic.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while attributing, building, signing or reading a package.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("geoip database {path}: {message}")]
    GeoDb { path: PathBuf, message: String },
    #[error("geoip lookup of {addr} in {path}: {message}")]
    Lookup {
        addr: std::net::IpAddr,
        path: PathBuf,
        message: String,
    },
    #[error("key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("recipients directory: {0}")]
    Recipients(String),
    #[error("evidence config: {0}")]
    Config(String),
    #[error("cannot build package: {0}")]
    Build(String),
    #[error("evidence store ledger: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
