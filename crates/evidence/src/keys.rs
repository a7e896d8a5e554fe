//! Ed25519 signing keys: generation, the key files (securesystemslib's JSON key layout, so an
//! independent verifier reads the public key as is) and the permission rule for private keys.

use crate::canon::{hex, jcs, sha256_hex, unhex};
use crate::error::{Error, Result};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A private key with its key id.
pub struct SecretKey {
    pub key: SigningKey,
    pub keyid: String,
}

impl std::fmt::Debug for SecretKey {
    // Never print key material, not even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey")
            .field("keyid", &self.keyid)
            .finish_non_exhaustive()
    }
}

/// A public key with its key id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub key: VerifyingKey,
    pub keyid: String,
}

fn public_json(pk: &VerifyingKey) -> serde_json::Value {
    json!({"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": hex(pk.as_bytes())}})
}

/// The key id: SHA-256 of the canonical JSON of the public key, as securesystemslib computes it.
pub fn keyid(pk: &VerifyingKey) -> String {
    // The canonical form of a fixed-shape object cannot fail to serialise.
    sha256_hex(&jcs(&public_json(pk)).unwrap_or_default())
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<SecretKey> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| Error::Key {
            path: PathBuf::new(),
            message: format!("no randomness available: {e}"),
        })?;
        Ok(SecretKey::from_seed(&seed))
    }

    pub fn from_seed(seed: &[u8; 32]) -> SecretKey {
        let key = SigningKey::from_bytes(seed);
        let keyid = keyid(&key.verifying_key());
        SecretKey { key, keyid }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.key.verifying_key(),
            keyid: self.keyid.clone(),
        }
    }

    /// Writes the private key to `path` (mode 0600, never over an existing file) and the public
    /// key to `path.pub`; returns the public key's path.
    pub fn write(&self, path: &Path) -> Result<PathBuf> {
        let pk = self.key.verifying_key();
        let mut private = public_json(&pk);
        private["keyid"] = json!(self.keyid);
        private["keyval"]["private"] = json!(hex(self.key.as_bytes()));
        let mut public = public_json(&pk);
        public["keyid"] = json!(self.keyid);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(path).map_err(|e| Error::io(path, e))?;
        let text = serde_json::to_string_pretty(&private)? + "\n";
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(path, e))?;
        let pub_path = PathBuf::from(format!("{}.pub", path.display()));
        let text = serde_json::to_string_pretty(&public)? + "\n";
        // Never through a file or symlink already there, and readable by all whatever the
        // umask; without its public half the new private key is removed again.
        let written = (|| {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o644);
            let mut f = opts.open(&pub_path)?;
            #[cfg(unix)]
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(path);
            return Err(Error::io(&pub_path, e));
        }
        Ok(pub_path)
    }

    /// Loads a private key file, refusing one that group or others can read: a signing key
    /// anyone on the host can copy proves nothing about who signed.
    pub fn load(path: &Path) -> Result<SecretKey> {
        let err = |message: String| Error::Key {
            path: path.to_path_buf(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(err(format!(
                    "private key is accessible by group or others (mode {mode:04o}); run chmod 600"
                )));
            }
        }
        let _ = meta;
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| err(format!("not a key file: {e}")))?;
        let seed = v["keyval"]["private"]
            .as_str()
            .and_then(unhex::<32>)
            .ok_or_else(|| err("no keyval.private of 64 hex digits: not a private key".into()))?;
        let sk = SecretKey::from_seed(&seed);
        if let Some(p) = v["keyval"]["public"].as_str() {
            if unhex::<32>(p) != Some(*sk.key.verifying_key().as_bytes()) {
                return Err(err("keyval.public does not belong to keyval.private".into()));
            }
        }
        Ok(sk)
    }
}

impl PublicKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<PublicKey> {
        let key = VerifyingKey::from_bytes(bytes).ok()?;
        Some(PublicKey {
            keyid: keyid(&key),
            key,
        })
    }

    /// Loads a public key file (`keygen`'s `.pub`), or a bare line of 64 hex digits.
    pub fn load(path: &Path) -> Result<PublicKey> {
        let err = |message: String| Error::Key {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let hex_key = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => {
                if v["keytype"] != "ed25519" {
                    return Err(err("keytype is not ed25519".into()));
                }
                v["keyval"]["public"].as_str().map(str::to_string)
            }
            Err(_) => Some(text.trim().to_string()),
        };
        hex_key
            .as_deref()
            .and_then(unhex::<32>)
            .and_then(|b| PublicKey::from_bytes(&b))
            .ok_or_else(|| err("no valid Ed25519 public key (keyval.public, 64 hex digits)".into()))
    }

    /// The key as securesystemslib's `SSlibKey.from_dict` takes it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = public_json(&self.key);
        v["keyid"] = json!(self.keyid);
        v
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Regression (issue 19): the public key was written through whatever `.pub` was there,
    /// a symlink included, with a mode from the umask.
    #[test]
    fn the_public_key_is_a_new_file_readable_by_all_never_written_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::from_seed(&[7; 32]);
        let pub_path = key.write(&dir.path().join("signing.key")).unwrap();
        let mode = std::fs::metadata(&pub_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let mode = std::fs::metadata(dir.path().join("signing.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);

        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "untouched").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("other.key.pub")).unwrap();
        assert!(key.write(&dir.path().join("other.key")).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        assert!(
            !dir.path().join("other.key").exists(),
            "no private key without its public half"
        );
    }
}
