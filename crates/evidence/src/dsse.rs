//! DSSE envelopes (Dead Simple Signing Envelope v1) over in-toto Statements v1. The signature
//! covers the pre-authentication encoding, which binds the payload type into the signed bytes.

use crate::keys::{PublicKey, SecretKey};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer};
use serde::{Deserialize, Serialize};

/// The payload type of an in-toto Statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// Our predicate: a normwatch evidence package.
pub const PREDICATE_TYPE: &str = "https://example.invalid/normwatch/evidence-package/v1";

/// `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + payload_type.len() + 32);
    v.extend_from_slice(
        format!(
            "DSSEv1 {} {payload_type} {} ",
            payload_type.len(),
            body.len()
        )
        .as_bytes(),
    );
    v.extend_from_slice(body);
    v
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    pub keyid: String,
    pub sig: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

/// Signs `payload` (of type [`PAYLOAD_TYPE`]).
pub fn sign(payload: &[u8], key: &SecretKey) -> Envelope {
    let sig = key.key.sign(&pae(PAYLOAD_TYPE, payload));
    Envelope {
        payload: B64.encode(payload),
        payload_type: PAYLOAD_TYPE.to_string(),
        signatures: vec![EnvelopeSignature {
            keyid: key.keyid.clone(),
            sig: B64.encode(sig.to_bytes()),
        }],
    }
}

/// Checks that one signature of `env` verifies with `key`; returns the payload.
pub fn verify(env: &Envelope, key: &PublicKey) -> Result<Vec<u8>, String> {
    if env.payload_type != PAYLOAD_TYPE {
        return Err(format!(
            "payloadType is {:?}, expected {PAYLOAD_TYPE:?}",
            env.payload_type
        ));
    }
    let payload = B64
        .decode(&env.payload)
        .map_err(|e| format!("payload is not base64: {e}"))?;
    let msg = pae(&env.payload_type, &payload);
    if env.signatures.is_empty() {
        return Err("no signatures".into());
    }
    // Only a signature that names the key is tried: a keyid that does not match means the
    // package was signed (or re-labelled) by someone else.
    let mut named = false;
    for s in &env.signatures {
        if s.keyid != key.keyid {
            continue;
        }
        named = true;
        let Ok(bytes) = B64.decode(&s.sig) else {
            continue;
        };
        let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            continue;
        };
        let sig = Signature::from_bytes(&bytes);
        if key.key.verify_strict(&msg, &sig).is_ok() {
            return Ok(payload);
        }
    }
    if !named {
        return Err(format!(
            "no signature names key {} (keyids: {})",
            key.keyid,
            env.signatures
                .iter()
                .map(|s| s.keyid.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Err(format!("no signature verifies with key {}", key.keyid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn sign_then_verify_and_tampering_fails() {
        let k = SecretKey::from_seed(&[7; 32]);
        let mut env = sign(b"{\"a\":1}", &k);
        assert_eq!(verify(&env, &k.public()).unwrap(), b"{\"a\":1}");
        let other = SecretKey::from_seed(&[8; 32]);
        assert!(verify(&env, &other.public()).is_err());
        env.payload = B64.encode(b"{\"a\":2}");
        assert!(verify(&env, &k.public()).is_err());
    }
}
