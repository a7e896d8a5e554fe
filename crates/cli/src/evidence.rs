//! `normwatch keygen` and `normwatch verify`: the signing key of evidence packages, and the
//! check a recipient runs on a package before acting on it.

use crate::UsageError;
use normwatch_evidence::keys::{PublicKey, SecretKey};
use normwatch_evidence::verify::{printable, verify_path};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the private key (mode 0600; an existing file is never overwritten). The
    /// public key goes to the same path with `.pub` appended.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The package: its directory or its `.tar`.
    #[arg(value_name = "PACKAGE")]
    pub package: PathBuf,
    /// The sender's public key (`keygen`'s `.pub` file, or 64 hex digits in a file).
    #[arg(long, value_name = "PUBKEY")]
    pub key: PathBuf,
    /// Also check the evidence store's sent ledger (the operator's audit): every delivery
    /// recorded in a stored package's custody log is witnessed there, and the reverse.
    #[arg(long, value_name = "STORE_DIR")]
    pub store: Option<PathBuf>,
}

/// A package that failed verification (exit 1).
#[derive(Debug)]
pub struct VerifyFailed(pub String);

impl std::fmt::Display for VerifyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VerifyFailed {}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    if args.out.exists() {
        return Err(UsageError(format!(
            "{}: already exists; refusing to overwrite a key",
            args.out.display()
        ))
        .into());
    }
    let key = SecretKey::generate()?;
    let public = key.write(&args.out)?;
    outln!(
        "private key: {} (mode 0600)\npublic key:  {}\nkey id:      {}",
        args.out.display(),
        public.display(),
        key.keyid
    );
    Ok(())
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let key = PublicKey::load(&args.key).map_err(|e| UsageError(e.to_string()))?;
    if !args.package.exists() {
        return Err(UsageError(format!(
            "{}: no such package",
            printable(&args.package.display().to_string())
        ))
        .into());
    }
    if let Some(dir) = &args.store {
        if !dir.join("ledger.sqlite3").is_file() {
            return Err(UsageError(format!(
                "{}: not an evidence store (no ledger.sqlite3)",
                printable(&dir.display().to_string())
            ))
            .into());
        }
        let store = normwatch_evidence::store::Store::open(dir)
            .map_err(|e| UsageError(format!("{}: {e}", printable(&dir.display().to_string()))))?;
        let problems = store
            .audit_sent(&key)
            .map_err(|e| VerifyFailed(format!("{}: {e}", dir.display())))?;
        if !problems.is_empty() {
            return Err(VerifyFailed(format!(
                "{}: sent ledger check failed: {}",
                printable(&dir.display().to_string()),
                printable(&problems.join("; "))
            ))
            .into());
        }
    }
    match verify_path(&args.package, &key) {
        Ok(v) => {
            // Names come from the command line and the package: printed escaped.
            outln!(
                "{}: ok (package {}, for {}, {} files, {} custody entries, signed by key {})",
                printable(&args.package.display().to_string()),
                printable(&v.package_id),
                printable(&v.recipient),
                v.files,
                v.custody_entries,
                key.keyid
            );
            Ok(())
        }
        Err(fault) => Err(VerifyFailed(format!(
            "{}: verification failed: {fault}",
            printable(&args.package.display().to_string())
        ))
        .into()),
    }
}
