//! Configuration problems: one [`Diagnostic`] per mistake, collected into [`Diagnostics`] so a
//! file's every problem is reported in one run.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// Key path, e.g. `sensor.timeouts.tcp_idle` or `asset[1].cidrs[0]`; empty when the
    /// problem is the file as a whole (a TOML syntax error).
    pub key: String,
    /// What is wrong and what is accepted instead. A single line.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

/// Every problem found in a file. The order is fixed: the top level, `[sensor]`, `[capture]`,
/// `[bus]`, `[kafka]`, `[spool]`, `[detect]`, each `[[asset]]`, then the checks across assets;
/// within a table, unknown or mistyped keys (alphabetically) before bad values
/// (`[kafka.options]` in file order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostics {
    file: PathBuf,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub(crate) fn new(file: &Path) -> Self {
        Diagnostics {
            file: file.to_path_buf(),
            items: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        // One line per problem, whatever the underlying parser printed.
        let message: String = message.into();
        let message = message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        self.items.push(Diagnostic {
            file: self.file.clone(),
            key: key.into(),
            message,
        });
    }

    /// The file the problems are in.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The problems.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.items.iter()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

/// One line per problem: `FILE: KEY: message`.
impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration; every problem is listed.
    #[error("{}", invalid_header(.0))]
    Invalid(Diagnostics),
}

/// `N problems in configuration FILE:` followed by the problems, one a line.
fn invalid_header(d: &Diagnostics) -> String {
    let n = d.len();
    let s = if n == 1 { "" } else { "s" };
    format!(
        "{n} problem{s} in configuration {}:\n{d}",
        d.file().display()
    )
}

/// The text of the file at `path` (configuration or a catalogue), or the error naming it.
pub(crate) fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A catalogue's TOML, or the parser's message as the file's diagnostic.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &Path,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let mut d = Diagnostics::new(origin);
        d.push("", e.message().trim().to_string());
        ConfigError::Invalid(d)
    })
}
