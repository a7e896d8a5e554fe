//! Delivery of a stored package over one channel: a TAXII 2.1 push (objects envelope, then the
//! 202 status resource followed to completion), an HTTPS webhook POST of the `.tar`, or a drop
//! of the `.tar` into a directory.
//!
//! Every channel is idempotent for a given package, so a delivery repeated after a crash (the
//! outbox marks an item sent only after it succeeded) changes nothing at the recipient: STIX
//! objects keep their ids and versions, the webhook carries the package id as
//! `Idempotency-Key`, and the dropped file has the package's name and content.
//!
//! A TAXII channel also carries replies: [`taxii_notes`] reads the `note` objects added to the
//! collection since the last poll (`added_after`, a bounded number of pages).

use crate::recipients::{check_transport, Channel, Transport};
use std::path::Path;
use std::time::Duration;

/// The TAXII 2.1 media type.
pub const TAXII_MEDIA_TYPE: &str = "application/taxii+json;version=2.1";

/// Why a delivery failed; the outbox retries it later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeliveryError(pub String);

fn err<T>(s: impl Into<String>) -> Result<T, DeliveryError> {
    Err(DeliveryError(s.into()))
}

/// An HTTP agent for one channel. With `ca` the certificates in that PEM file are the only
/// trust roots; without it the webpki (Mozilla) roots are. The URL is checked again here, not
/// only when the directory is loaded: an outbox row queued under an older rule must not send
/// evidence in clear either.
fn agent(url: &str, ca: Option<&str>, timeout: Duration) -> Result<ureq::Agent, DeliveryError> {
    let transport = check_transport(url).map_err(DeliveryError)?;
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca) = ca {
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&ca_certs(ca)?));
    }
    Ok(ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        // A TLS channel never follows a redirect to plain http.
        .https_only(transport == Transport::Tls)
        .tls_config(tls.build())
        .build()
        .into())
}

/// The certificates of a PEM file; a file without any is an error, since trusting nothing
/// would fail every delivery with a less helpful message.
fn ca_certs(path: &str) -> Result<Vec<ureq::tls::Certificate<'static>>, DeliveryError> {
    let pem = std::fs::read(path).map_err(|e| DeliveryError(format!("ca {path}: {e}")))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return err(format!("ca {path}: {e}")),
        }
    }
    if certs.is_empty() {
        return err(format!("ca {path}: no PEM certificate in the file"));
    }
    Ok(certs)
}

/// A transport error, with the trust roots named when the server's certificate was refused
/// (the usual cause: a recipient behind a private CA and no `ca` on the channel, or the wrong
/// one).
fn transport_error(what: &str, url: &str, ca: Option<&str>, e: &ureq::Error) -> DeliveryError {
    let text = e.to_string();
    if text.contains("certificate") {
        let roots = match ca {
            Some(ca) => format!("the CA file {ca}"),
            None => "the webpki roots (no `ca` on the channel)".to_string(),
        };
        DeliveryError(format!(
            "{what} {url}: TLS certificate not trusted by {roots}: {text}"
        ))
    } else {
        DeliveryError(format!("{what} {url}: {text}"))
    }
}

fn secret(var: &Option<String>) -> Result<Option<String>, DeliveryError> {
    match var {
        None => Ok(None),
        Some(v) => std::env::var(v)
            .map(Some)
            .map_err(|_| DeliveryError(format!("environment variable {v} is not set"))),
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Delivers the package `package_id`, whose directory is `dir` and archive `tar`; returns a
/// receipt for the ledger.
pub fn deliver(
    channel: &Channel,
    package_id: &str,
    dir: &Path,
    tar: &Path,
    timeout: Duration,
) -> Result<String, DeliveryError> {
    match channel {
        Channel::Directory { path } => drop_file(Path::new(path), package_id, tar),
        Channel::Webhook { url, token_env, ca } => {
            let ca = ca.as_deref();
            let agent = agent(url, ca, timeout)?;
            let body =
                std::fs::read(tar).map_err(|e| DeliveryError(format!("{}: {e}", tar.display())))?;
            let mut req = agent
                .post(url)
                .header("Content-Type", "application/x-tar")
                .header("Idempotency-Key", package_id)
                .header("X-Normwatch-Package", package_id);
            if let Some(t) = secret(token_env)? {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            let resp = req
                .send(&body[..])
                .map_err(|e| transport_error("webhook", url, ca, &e))?;
            let status = resp.status().as_u16();
            if (200..300).contains(&status) {
                Ok(format!("webhook {url}: HTTP {status}"))
            } else {
                err(format!("webhook {url}: HTTP {status}"))
            }
        }
        Channel::Taxii {
            url,
            collection,
            user,
            password_env,
            ca,
        } => {
            let auth = match user {
                Some(u) => Some(basic(u, &secret(password_env)?.unwrap_or_default())),
                None => None,
            };
            let ca = ca.as_deref();
            let agent = agent(url, ca, timeout)?;
            taxii_push(&agent, ca, url, collection, auth.as_deref(), dir)
        }
    }
}

fn drop_file(target: &Path, package_id: &str, tar: &Path) -> Result<String, DeliveryError> {
    let io = |e: std::io::Error, p: &Path| DeliveryError(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(target).map_err(|e| io(e, target))?;
    let bytes = std::fs::read(tar).map_err(|e| io(e, tar))?;
    let dest = target.join(format!("{package_id}.tar"));
    if std::fs::read(&dest).is_ok_and(|b| b == bytes) {
        return Ok(format!("file {} (already present)", dest.display()));
    }
    // Written under a hidden name and renamed, so a reader never sees half a package.
    let tmp = target.join(format!(".{package_id}.tar.tmp"));
    std::fs::write(&tmp, &bytes).map_err(|e| io(e, &tmp))?;
    std::fs::rename(&tmp, &dest).map_err(|e| io(e, &dest))?;
    Ok(format!("file {}", dest.display()))
}

fn taxii_push(
    agent: &ureq::Agent,
    ca: Option<&str>,
    api_root: &str,
    collection: &str,
    auth: Option<&str>,
    dir: &Path,
) -> Result<String, DeliveryError> {
    let bundle_path = dir.join("stix/bundle.json");
    let bundle: serde_json::Value = std::fs::read(&bundle_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| DeliveryError(format!("{}: {e}", bundle_path.display())))?;
    // TAXII takes an envelope of objects, not a bundle. The extension definition stays in
    // the package's bundle only: medallion 3.0.0 (the TAXII 2.1 reference server) reads an
    // object's `version` property as its TAXII version timestamp (`common.find_att`), and the
    // extension definition's `version` ("1.0.0") then fails every unfiltered read of the
    // collection with HTTP 500.
    let pushed: Vec<serde_json::Value> = bundle["objects"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|o| o["type"] != "extension-definition")
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let envelope = serde_json::json!({"objects": pushed});
    let body = serde_json::to_vec(&envelope).map_err(|e| DeliveryError(e.to_string()))?;
    let root = api_root.trim_end_matches('/');
    let url = format!("{root}/collections/{collection}/objects/");
    // An empty Authorization header is never sent: no header is the same as no credentials.
    let auth = auth.unwrap_or_default();
    let mut post = agent
        .post(&url)
        .header("Content-Type", TAXII_MEDIA_TYPE)
        .header("Accept", TAXII_MEDIA_TYPE);
    if !auth.is_empty() {
        post = post.header("Authorization", auth);
    }
    let mut resp = post
        .send(&body[..])
        .map_err(|e| transport_error("taxii", &url, ca, &e))?;
    let code = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    if code != 202 {
        return err(format!(
            "taxii {url}: HTTP {code}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    let mut status: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| DeliveryError(format!("taxii {url}: status resource is not JSON: {e}")))?;
    let status_id = status["id"].as_str().unwrap_or_default().to_string();
    // Follow the status resource until the server has processed every object.
    for _ in 0..20 {
        if status["status"] == "complete" {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        let surl = format!("{root}/status/{status_id}/");
        let mut get = agent.get(&surl).header("Accept", TAXII_MEDIA_TYPE);
        if !auth.is_empty() {
            get = get.header("Authorization", auth);
        }
        let mut r = get
            .call()
            .map_err(|e| transport_error("taxii", &surl, ca, &e))?;
        let code = r.status().as_u16();
        let t = r.body_mut().read_to_string().unwrap_or_default();
        if code != 200 {
            return err(format!("taxii {surl}: HTTP {code}"));
        }
        status = serde_json::from_str(&t)
            .map_err(|e| DeliveryError(format!("taxii {surl}: not JSON: {e}")))?;
    }
    let n = |k: &str| status[k].as_u64().unwrap_or(0);
    if status["status"] != "complete" {
        return err(format!(
            "taxii status {status_id}: still {} after polling",
            status["status"]
        ));
    }
    if n("failure_count") > 0 {
        // A server that already holds an object (same id and version) may report it as a
        // failure, as medallion does; the push is then complete if every failed object is in
        // the collection's manifest at the version pushed.
        let failed: Vec<&str> = status["failures"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f["id"].as_str()).collect())
            .unwrap_or_default();
        let versions: std::collections::BTreeMap<&str, Option<&str>> = pushed
            .iter()
            .filter_map(|o| {
                Some((
                    o["id"].as_str()?,
                    o["modified"].as_str().or(o["created"].as_str()),
                ))
            })
            .collect();
        if !failed.is_empty()
            && already_held(agent, ca, root, collection, auth, &failed, &versions).unwrap_or(false)
        {
            return Ok(format!(
                "taxii status {status_id} complete: {} new, {} already held, of {} objects",
                n("success_count"),
                n("failure_count"),
                n("total_count")
            ));
        }
        return err(format!(
            "taxii status {status_id}: {} of {} objects failed: {}",
            n("failure_count"),
            n("total_count"),
            status["failures"]
        ));
    }
    Ok(format!(
        "taxii status {status_id} complete: {} new, 0 already held, of {} objects",
        n("success_count"),
        n("total_count")
    ))
}

/// Whether the collection's manifest lists every object in `ids` (at the version we pushed,
/// for objects that have one).
fn already_held(
    agent: &ureq::Agent,
    ca: Option<&str>,
    root: &str,
    collection: &str,
    auth: &str,
    ids: &[&str],
    versions: &std::collections::BTreeMap<&str, Option<&str>>,
) -> Result<bool, DeliveryError> {
    let mut held = std::collections::BTreeSet::new();
    for chunk in ids.chunks(40) {
        let url = format!(
            // `limit` always: medallion 3.0.0 fails a `next` request without it (HTTP 500).
            "{root}/collections/{collection}/manifest/?match[id]={}&match[version]=all&limit=100",
            chunk.join(",")
        );
        let mut next: Option<String> = None;
        loop {
            let u = match &next {
                Some(n) => format!("{url}&next={n}"),
                None => url.clone(),
            };
            let mut get = agent.get(&u).header("Accept", TAXII_MEDIA_TYPE);
            if !auth.is_empty() {
                get = get.header("Authorization", auth);
            }
            let mut r = get
                .call()
                .map_err(|e| transport_error("taxii", &u, ca, &e))?;
            if r.status().as_u16() != 200 {
                return Ok(false);
            }
            let t = r.body_mut().read_to_string().unwrap_or_default();
            let v: serde_json::Value =
                serde_json::from_str(&t).map_err(|e| DeliveryError(format!("taxii {u}: {e}")))?;
            for o in v["objects"].as_array().into_iter().flatten() {
                let (Some(id), version) = (o["id"].as_str(), o["version"].as_str()) else {
                    continue;
                };
                let ours = versions.get(id).copied().flatten();
                if ours.is_none() || ours == version {
                    held.insert(id.to_string());
                }
            }
            match (v["more"].as_bool(), v["next"].as_str()) {
                (Some(true), Some(n)) => next = Some(n.to_string()),
                _ => break,
            }
        }
    }
    Ok(ids.iter().all(|id| held.contains(*id)))
}

/// Pages of a collection read per reply poll (of up to 100 objects each): a recipient's
/// collection with a backlog is read on by the following polls.
pub const REPLY_POLL_PAGES: usize = 10;

/// The `note` objects added to a TAXII channel's collection after `added_after` (the
/// `X-TAXII-Date-Added-Last` of an earlier poll; everything when `None`), at most
/// [`REPLY_POLL_PAGES`] pages, and the date to poll after next time (`None`: nothing new).
pub fn taxii_notes(
    channel: &Channel,
    added_after: Option<&str>,
    timeout: Duration,
) -> Result<(Vec<serde_json::Value>, Option<String>), DeliveryError> {
    let Channel::Taxii {
        url,
        collection,
        user,
        password_env,
        ca,
    } = channel
    else {
        return Ok((Vec::new(), None));
    };
    let auth = match user {
        Some(u) => basic(u, &secret(password_env)?.unwrap_or_default()),
        None => String::new(),
    };
    let ca = ca.as_deref();
    let agent = agent(url, ca, timeout)?;
    let root = url.trim_end_matches('/');
    let mut base = format!("{root}/collections/{collection}/objects/?match[type]=note&limit=100");
    if let Some(a) = added_after {
        base.push_str(&format!("&added_after={a}"));
    }
    let mut notes = Vec::new();
    let mut last: Option<String> = None;
    let mut next: Option<String> = None;
    for _ in 0..REPLY_POLL_PAGES {
        let u = match &next {
            Some(n) => format!("{base}&next={n}"),
            None => base.clone(),
        };
        let mut get = agent.get(&u).header("Accept", TAXII_MEDIA_TYPE);
        if !auth.is_empty() {
            get = get.header("Authorization", &auth);
        }
        let mut r = get
            .call()
            .map_err(|e| transport_error("taxii", &u, ca, &e))?;
        let code = r.status().as_u16();
        if code == 404 && notes.is_empty() && next.is_none() {
            // TAXII answers 404 for a filter that matches nothing.
            return Ok((notes, None));
        }
        if code != 200 {
            return err(format!("taxii {u}: HTTP {code}"));
        }
        if let Some(d) = r
            .headers()
            .get("X-TAXII-Date-Added-Last")
            .and_then(|v| v.to_str().ok())
        {
            last = Some(d.to_string());
        }
        let t = r.body_mut().read_to_string().unwrap_or_default();
        let v: serde_json::Value =
            serde_json::from_str(&t).map_err(|e| DeliveryError(format!("taxii {u}: {e}")))?;
        notes.extend(
            v["objects"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| o["type"] == "note")
                .cloned(),
        );
        match (v["more"].as_bool(), v["next"].as_str()) {
            (Some(true), Some(n)) => next = Some(n.to_string()),
            _ => break,
        }
    }
    Ok((notes, last))
}
