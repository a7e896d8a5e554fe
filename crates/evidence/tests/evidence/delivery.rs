//! The store, its outbox and the delivery workers: a recipient that is down, a process killed
//! between building and delivering, and a real TAXII 2.1 server (medallion) on loopback.

use super::{build_all, T};
use normwatch_evidence::recipients::{Channel, Recipient};
use normwatch_evidence::store::{Store, FIRST_BACKOFF_NS};
use normwatch_evidence::tlp::Tlp;
use normwatch_evidence::verify::verify_path;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(super) const TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn recipient(channels: Vec<Channel>) -> Recipient {
    Recipient {
        code: "DE".into(),
        name: "CERT-Bund".into(),
        language: "de".into(),
        tlp_accepted: vec![Tlp::Amber],
        public_key: None,
        email: None,
        channels,
    }
}

#[test]
fn a_down_recipient_waits_in_the_outbox_and_a_crash_loses_and_repeats_nothing() {
    let built = build_all(T);
    let p = &built.packages[1];
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let drop_dir = tmp.path().join("exchange/DE");
    // The recipient's share is not there: a plain file stands where its directory should be.
    std::fs::create_dir_all(tmp.path().join("exchange")).unwrap();
    std::fs::write(&drop_dir, b"not a directory").unwrap();
    let r = recipient(vec![Channel::Directory {
        path: drop_dir.display().to_string(),
    }]);
    {
        let mut store = Store::open(&root).unwrap();
        assert!(store.put(p, &r, T).unwrap());
        assert!(!store.put(p, &r, T).unwrap(), "stored once");
        let pass = store
            .deliver_due(T, &built.key, "NCSC-NL", TIMEOUT)
            .unwrap();
        assert_eq!((pass.sent, pass.failed.len()), (0, 1));
        let d = store.deliveries(&p.id).unwrap();
        assert_eq!(d[0].attempts, 1);
        assert_eq!(d[0].next_attempt_ns, T + FIRST_BACKOFF_NS);
        assert!(d[0].last_error.as_deref().unwrap().contains("exchange/DE"));
        // Process killed here: nothing sent, the store dropped without a clean shutdown.
    }
    let mut store = Store::open(&root).unwrap();
    assert_eq!(store.pending().unwrap(), 1);
    assert!(
        store.due(T + 1, 10).unwrap().is_empty(),
        "backoff respected"
    );
    std::fs::remove_file(&drop_dir).unwrap();
    let later = T + FIRST_BACKOFF_NS;
    let pass = store
        .deliver_due(later, &built.key, "NCSC-NL", TIMEOUT)
        .unwrap();
    assert_eq!((pass.sent, pass.failed.len()), (1, 0));
    let dropped = drop_dir.join(format!("{}.tar", p.id));
    assert_eq!(
        std::fs::read(&dropped).unwrap(),
        std::fs::read(store.package_tar(&p.id)).unwrap()
    );
    assert_eq!(
        verify_path(&dropped, &built.key.public())
            .unwrap()
            .package_id,
        p.id
    );
    // The stored directory's custody log now ends with the signed delivery.
    let v = verify_path(&store.package_dir(&p.id), &built.key.public()).unwrap();
    assert_eq!(v.custody_entries, 5);
    drop(store);
    let mut store = Store::open(&root).unwrap();
    assert_eq!(store.pending().unwrap(), 0);
    let pass = store
        .deliver_due(
            later + 10 * FIRST_BACKOFF_NS,
            &built.key,
            "NCSC-NL",
            TIMEOUT,
        )
        .unwrap();
    assert_eq!((pass.sent, pass.failed.len()), (0, 0), "nothing sent twice");
    assert!(!store.put(p, &r, later).unwrap());
}

#[test]
fn a_delivery_repeated_after_a_crash_changes_nothing_at_the_drop() {
    let built = build_all(T);
    let p = &built.packages[1];
    let tmp = tempfile::tempdir().unwrap();
    let drop_dir = tmp.path().join("exchange");
    let r = recipient(vec![Channel::Directory {
        path: drop_dir.display().to_string(),
    }]);
    let mut store = Store::open(&tmp.path().join("store")).unwrap();
    store.put(p, &r, T).unwrap();
    let item = store.due(T, 10).unwrap().remove(0);
    let dir = store.package_dir(&p.id);
    let tar = store.package_tar(&p.id);
    // Delivered, then killed before the outbox row was marked: the worker delivers again.
    let first =
        normwatch_evidence::deliver::deliver(&item.channel, &p.id, &dir, &tar, TIMEOUT).unwrap();
    assert!(!first.contains("already present"));
    let pass = store
        .deliver_due(T, &built.key, "NCSC-NL", TIMEOUT)
        .unwrap();
    assert_eq!(pass.sent, 1);
    let receipt = store.deliveries(&p.id).unwrap()[0].receipt.clone().unwrap();
    assert!(receipt.contains("already present"), "{receipt}");
    assert_eq!(std::fs::read_dir(&drop_dir).unwrap().count(), 1);
}

pub(super) fn medallion() -> PathBuf {
    if let Ok(p) = std::env::var("NORMWATCH_MEDALLION") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/medallion");
    assert!(
        venv.exists(),
        "medallion (PyPI, the TAXII 2.1 reference server) not found: run tests/evidence/check.sh \
         once (it creates target/pyenv) or set NORMWATCH_MEDALLION"
    );
    venv
}

pub(super) const COLLECTION: &str = "365fed99-08fa-fdcd-a1b3-fb247eb41d01";

pub(super) struct Server(pub(super) Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on loopback, for a test server.
pub(super) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts medallion on 127.0.0.1:`port`; with `tls` (certificate chain and key PEM files) it
/// serves HTTPS through Flask's `ssl_context`, which medallion's own command line does not
/// offer, so it is then started the way that command starts it.
pub(super) fn start_medallion(dir: &Path, port: u16, tls: Option<(&Path, &Path)>) -> Server {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let data = serde_json::json!({
        "/discovery": {
            "title": "normwatch test TAXII server",
            "default": format!("{scheme}://127.0.0.1:{port}/api1/"),
            "api_roots": [format!("{scheme}://127.0.0.1:{port}/api1/")],
        },
        "api1": {
            "information": {
                "title": "requests for mitigation",
                "versions": ["application/taxii+json;version=2.1"],
                "max_content_length": 104857600,
            },
            "status": [],
            "collections": [{
                "id": COLLECTION,
                "title": "incoming evidence packages",
                "can_read": true,
                "can_write": true,
                "media_types": ["application/stix+json;version=2.1"],
                "objects": [],
                "manifest": [],
            }],
        },
    });
    let data_path = dir.join("taxii-data.json");
    std::fs::write(&data_path, serde_json::to_vec(&data).unwrap()).unwrap();
    let config = serde_json::json!({
        "backend": {
            "module": "medallion.backends.memory_backend",
            "module_class": "MemoryBackend",
            "filename": data_path,
        },
        "users": {"cert-bund": "s3cret-for-tests"},
        "taxii": {"max_page_size": 100},
    });
    let config_path = dir.join("taxii-config.json");
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    let mut cmd = match tls {
        None => {
            let mut c = Command::new(medallion());
            c.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .arg(&config_path);
            c
        }
        Some((cert, key)) => {
            let python = medallion().with_file_name("python");
            let mut c = Command::new(python);
            c.arg("-c")
                .arg(MEDALLION_TLS)
                .arg(&config_path)
                .arg(port.to_string())
                .arg(cert)
                .arg(key);
            c
        }
    };
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start medallion");
    let server = Server(child);
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "medallion did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// medallion's `main` with the certificate handed to Flask.
const MEDALLION_TLS: &str = "
import json, sys
from medallion import application_instance as app, register_blueprints, set_config
config_path, port, cert, key = sys.argv[1:5]
with open(config_path) as f:
    config = json.load(f)
for part in ('users', 'taxii', 'backend'):
    set_config(app, part, config)
register_blueprints(app)
app.run(host='127.0.0.1', port=int(port), ssl_context=(cert, key))
";

#[test]
fn taxii_push_to_a_real_server_after_it_comes_back_ends_complete() {
    let built = build_all(T);
    let p = &built.packages[1];
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    // The password comes from the environment, never from the directory file.
    std::env::set_var("NORMWATCH_TEST_TAXII_PASSWORD", "s3cret-for-tests");
    let r = recipient(vec![Channel::Taxii {
        url: format!("http://127.0.0.1:{port}/api1/"),
        collection: COLLECTION.into(),
        user: Some("cert-bund".into()),
        password_env: Some("NORMWATCH_TEST_TAXII_PASSWORD".into()),
        ca: None,
    }]);
    let mut store = Store::open(&tmp.path().join("store")).unwrap();
    store.put(p, &r, T).unwrap();
    // Server down: the delivery fails and waits.
    let pass = store
        .deliver_due(T, &built.key, "NCSC-NL", TIMEOUT)
        .unwrap();
    assert_eq!(pass.failed.len(), 1, "{pass:?}");
    let _server = start_medallion(tmp.path(), port, None);
    let pass = store
        .deliver_due(T + FIRST_BACKOFF_NS, &built.key, "NCSC-NL", TIMEOUT)
        .unwrap();
    assert_eq!((pass.sent, pass.failed.len()), (1, 0), "{pass:?}");
    let receipt = store.deliveries(&p.id).unwrap()[0].receipt.clone().unwrap();
    let mut bundle: serde_json::Value =
        serde_json::from_slice(&p.files["stix/bundle.json"]).unwrap();
    // The extension definition is not pushed (medallion reads its `version` as a timestamp).
    bundle["objects"]
        .as_array_mut()
        .unwrap()
        .retain(|o| o["type"] != "extension-definition");
    let n = bundle["objects"].as_array().unwrap().len();
    assert!(
        receipt.contains(&format!(
            "complete: {n} new, 0 already held, of {n} objects"
        )),
        "{receipt}"
    );
    // Pushed again (as after a crash before the outbox was updated): the server already holds
    // every object, which counts as delivered.
    let item_channel = r.channels[0].clone();
    let again = normwatch_evidence::deliver::deliver(
        &item_channel,
        &p.id,
        &store.package_dir(&p.id),
        &store.package_tar(&p.id),
        TIMEOUT,
    )
    .unwrap();
    assert!(
        again.contains(&format!("0 new, {n} already held, of {n} objects")),
        "{again}"
    );

    // Read back: the collection's unfiltered object list returns every pushed object whole.
    let held = read_collection(port);
    for o in bundle["objects"].as_array().unwrap() {
        let id = o["id"].as_str().unwrap();
        let back = held
            .iter()
            .find(|h| h["id"] == o["id"] && h.get("modified") == o.get("modified"))
            .unwrap_or_else(|| panic!("{id} not read back"));
        assert_eq!(back, o, "{id} read back changed");
    }

    // A second package of the same alert shares the definitions, the markings and the
    // operator's identity: the receipt counts new and already-held objects apart.
    let q = &built.packages[0];
    let mut qb: serde_json::Value = serde_json::from_slice(&q.files["stix/bundle.json"]).unwrap();
    qb["objects"]
        .as_array_mut()
        .unwrap()
        .retain(|o| o["type"] != "extension-definition");
    let qn = qb["objects"].as_array().unwrap().len();
    let before: std::collections::BTreeSet<String> = held
        .iter()
        .map(|h| {
            format!(
                "{}@{}",
                h["id"],
                h.get("modified").unwrap_or(&serde_json::Value::Null)
            )
        })
        .collect();
    let shared = qb["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| {
            before.contains(&format!(
                "{}@{}",
                o["id"],
                o.get("modified").unwrap_or(&serde_json::Value::Null)
            ))
        })
        .count();
    assert!(shared > 0 && shared < qn, "{shared} of {qn}");
    store.put(q, &r, T).unwrap();
    let pass = store
        .deliver_due(T + 2 * FIRST_BACKOFF_NS, &built.key, "NCSC-NL", TIMEOUT)
        .unwrap();
    assert_eq!((pass.sent, pass.failed.len()), (1, 0), "{pass:?}");
    let receipt = store.deliveries(&q.id).unwrap()[0].receipt.clone().unwrap();
    assert!(
        receipt.contains(&format!(
            "{} new, {shared} already held, of {qn} objects",
            qn - shared
        )),
        "{receipt}"
    );
    let held = read_collection(port);
    for o in qb["objects"].as_array().unwrap() {
        assert!(held.contains(o), "{} not read back whole", o["id"]);
    }
}

/// An agent for the test TAXII server (an HTTP status is an answer, not an error) and the
/// Basic authorisation of its user `cert-bund`.
pub(super) fn taxii_client() -> (ureq::Agent, String) {
    use base64::Engine;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("cert-bund:s3cret-for-tests")
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    (agent, auth)
}

/// Every object of the test collection, by unfiltered `GET …/objects/`, following `next`.
fn read_collection(port: u16) -> Vec<serde_json::Value> {
    let (agent, auth) = taxii_client();
    let base = format!("http://127.0.0.1:{port}/api1/collections/{COLLECTION}/objects/");
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        // medallion 3.0.0 fails a `next` request without `limit` (HTTP 500).
        let url = match &next {
            Some(n) => format!("{base}?limit=100&next={n}"),
            None => format!("{base}?limit=100"),
        };
        let mut r = agent
            .get(&url)
            .header("Accept", "application/taxii+json;version=2.1")
            .header("Authorization", &auth)
            .call()
            .unwrap();
        let code = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        assert_eq!(code, 200, "GET {url}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        out.extend(v["objects"].as_array().cloned().unwrap_or_default());
        match (v["more"].as_bool(), v["next"].as_str()) {
            (Some(true), Some(n)) => next = Some(n.to_string()),
            _ => break,
        }
    }
    out
}

/// A one-thread HTTP server answering every POST with `status`; returns the requests' headers
/// and bodies through the join handle once `n` requests were served.
/// Requests a test server saw: headers and body.
type Seen = Vec<(String, Vec<u8>)>;

fn webhook_server(n: usize, status: u16) -> (u16, std::thread::JoinHandle<Seen>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for stream in listener.incoming().take(n) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                head.push_str(&line);
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            seen.push((head, body));
        }
        seen
    });
    (port, handle)
}

#[test]
fn the_packager_opens_from_config_packages_once_and_delivers_by_webhook_and_drop() {
    use normwatch_evidence::keys::SecretKey;
    use normwatch_evidence::packager::Packager;
    let tmp = tempfile::tempdir().unwrap();
    let (port, server) = webhook_server(1, 200);
    std::fs::write(
        tmp.path().join("recipients.toml"),
        format!(
            r#"{}
[[state]]
code = "DE"
name = "CERT-Bund"
language = "de"
[[state.channel]]
kind = "webhook"
url = "http://127.0.0.1:{port}/evidence"

[[state]]
code = "FR"
name = "CERT-FR"
[[state.channel]]
kind = "directory"
path = "drops/FR"
"#,
            super::NL_RECIPIENT
        ),
    )
    .unwrap();
    let cfg = super::packager_config(
        tmp.path(),
        "tlp = \"amber\"\ndeadline_hours = 48",
        // No campaign hold: each alert is packaged when it closes (this test is about delivery).
        "[evidence.campaign]\nhold = \"0s\"\n",
    );
    let norms = super::norms();
    // A key others can read is refused.
    let key = SecretKey::generate().unwrap();
    let pub_path = key.write(&tmp.path().join("evidence.key")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let k = tmp.path().join("evidence.key");
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Packager::open(cfg.clone(), norms.clone())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("evidence.key") && e.contains("group or others"),
            "{e}"
        );
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut packager = Packager::open(cfg, norms).unwrap();
    let alert = super::sample_alert();
    let flows = normwatch_evidence::sample::flows(&alert, 2);
    let out = packager.package(&alert, &flows, T).unwrap();
    assert_eq!(out.stored.len(), 5, "{out:?}");
    assert!(out.lookup_errors.is_empty());
    let again = packager.package(&alert, &flows, T + 1).unwrap();
    assert_eq!((again.stored.len(), again.already_stored.len()), (0, 5));

    let pass = packager.deliver_due(T).unwrap();
    assert_eq!((pass.sent, pass.failed.len()), (5, 0), "{pass:?}");
    let pk = normwatch_evidence::keys::PublicKey::load(&pub_path).unwrap();
    let requests = server.join().unwrap();
    let (head, body) = &requests[0];
    let de = out.stored.iter().find(|id| id.contains("-DE-")).unwrap();
    assert!(
        head.contains(&format!("idempotency-key: {de}"))
            || head.contains(&format!("Idempotency-Key: {de}")),
        "{head}"
    );
    let files = normwatch_evidence::verify::read_tar(body.as_slice()).unwrap();
    assert_eq!(
        normwatch_evidence::verify::verify_files(&files, &pk)
            .unwrap()
            .package_id,
        *de
    );
    // GB, US and the spoofed source have no POC of their own: NL's authority gets them.
    assert_eq!(
        std::fs::read_dir(tmp.path().join("drops/NL"))
            .unwrap()
            .count(),
        3
    );
    assert_eq!(
        std::fs::read_dir(tmp.path().join("drops/FR"))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(packager.store().pending().unwrap(), 0);
}

#[test]
fn a_webhook_answering_an_error_is_retried_later() {
    let built = build_all(T);
    let p = &built.packages[1];
    let tmp = tempfile::tempdir().unwrap();
    let (port, server) = webhook_server(1, 503);
    let r = recipient(vec![Channel::Webhook {
        url: format!("http://127.0.0.1:{port}/x"),
        token_env: None,
        ca: None,
    }]);
    let mut store = Store::open(&tmp.path().join("store")).unwrap();
    store.put(p, &r, T).unwrap();
    let pass = store
        .deliver_due(T, &built.key, "NCSC-NL", TIMEOUT)
        .unwrap();
    assert_eq!(pass.failed.len(), 1);
    assert!(
        pass.failed[0].1.to_string().contains("HTTP 503"),
        "{pass:?}"
    );
    server.join().unwrap();
    assert_eq!(store.pending().unwrap(), 1);
}

/// A channel fixed in the recipients directory after packages were queued (the exchange share
/// moved): the packager's next pass delivers the waiting packages over the channel as it is
/// defined now, not as it was when they were queued.
#[test]
fn a_channel_fixed_in_the_directory_reaches_packages_already_queued() {
    use normwatch_evidence::config::EvidenceConfig;
    use normwatch_evidence::packager::Packager;
    let tmp = tempfile::tempdir().unwrap();
    let recipients = |drop: &str| {
        std::fs::write(
            tmp.path().join("recipients.toml"),
            format!(
                "[[state]]\ncode = \"NL\"\nname = \"NCSC-NL\"\n[[state.channel]]\nkind = \"directory\"\npath = \"{drop}\"\n"
            ),
        )
        .unwrap();
    };
    // The configured share is not there: a plain file stands where its directory should be.
    std::fs::write(tmp.path().join("old-share"), b"not a directory").unwrap();
    recipients("old-share");
    let geoip = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/geoip");
    let config = format!(
        "[evidence]\nown_state = \"NL\"\noperator = \"Example operator\"\nrecipients = \"recipients.toml\"\nsigning_key = \"evidence.key\"\nout_dir = \"store\"\n[evidence.geoip]\ncountry = \"{0}/GeoLite2-Country-Test.mmdb\"\n[evidence.campaign]\nhold = \"0s\"\n",
        geoip.display()
    );
    let cfg = EvidenceConfig::from_config_text(&config, tmp.path()).unwrap();
    normwatch_evidence::keys::SecretKey::generate()
        .unwrap()
        .write(&tmp.path().join("evidence.key"))
        .unwrap();
    let alert = super::sample_alert();
    let flows = normwatch_evidence::sample::flows(&alert, 1);
    let queued = {
        let mut p = Packager::open(cfg.clone(), super::norms()).unwrap();
        let out = p.package(&alert, &flows, T).unwrap();
        assert!(!out.stored.is_empty());
        let pass = p.deliver_due(T).unwrap();
        assert_eq!(pass.sent, 0);
        assert_eq!(pass.failed.len(), out.stored.len(), "{pass:?}");
        out.stored.len()
    };
    // The operator points the channel at the new share and restarts.
    std::fs::create_dir(tmp.path().join("new-share")).unwrap();
    recipients("new-share");
    let mut p = Packager::open(cfg, super::norms()).unwrap();
    assert_eq!(p.store().pending().unwrap(), queued);
    let pass = p.deliver_due(T + FIRST_BACKOFF_NS).unwrap();
    assert_eq!((pass.sent, pass.failed.len()), (queued, 0), "{pass:?}");
    assert_eq!(p.store().pending().unwrap(), 0);
    assert_eq!(
        std::fs::read_dir(tmp.path().join("new-share"))
            .unwrap()
            .count(),
        queued
    );
}

/// A CA file that is not there is reported when the packager opens, naming the State, the
/// channel and the file, rather than at the first delivery.
#[test]
fn a_missing_ca_file_is_refused_at_start() {
    use normwatch_evidence::config::EvidenceConfig;
    use normwatch_evidence::packager::Packager;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("recipients.toml"),
        "[[state]]\ncode = \"NL\"\nname = \"NCSC-NL\"\n[[state.channel]]\nkind = \"webhook\"\nurl = \"https://csirt.example/evidence\"\nca = \"ca/ncsc.pem\"\n",
    )
    .unwrap();
    let geoip = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/geoip");
    let config = format!(
        "[evidence]\nown_state = \"NL\"\noperator = \"Example operator\"\nrecipients = \"recipients.toml\"\nsigning_key = \"evidence.key\"\nout_dir = \"store\"\n[evidence.geoip]\ncountry = \"{0}/GeoLite2-Country-Test.mmdb\"\n[evidence.campaign]\nhold = \"0s\"\n",
        geoip.display()
    );
    let cfg = EvidenceConfig::from_config_text(&config, tmp.path()).unwrap();
    normwatch_evidence::keys::SecretKey::generate()
        .unwrap()
        .write(&tmp.path().join("evidence.key"))
        .unwrap();
    let e = Packager::open(cfg.clone(), super::norms())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("NL: channel[0] (webhook https://csirt.example/evidence): ca ")
            && e.contains("ca/ncsc.pem"),
        "{e}"
    );
    std::fs::create_dir(tmp.path().join("ca")).unwrap();
    std::fs::write(tmp.path().join("ca/ncsc.pem"), b"").unwrap();
    assert!(Packager::open(cfg, super::norms()).is_ok());
}

#[test]
fn a_sent_entry_removed_from_a_package_or_the_ledger_is_detected() {
    let built = build_all(T);
    let tmp = tempfile::tempdir().unwrap();
    let r = recipient(vec![Channel::Directory {
        path: tmp.path().join("exchange").display().to_string(),
    }]);
    let mut store = Store::open(&tmp.path().join("store")).unwrap();
    for p in &built.packages[..2] {
        store.put(p, &r, T).unwrap();
    }
    let pass = store
        .deliver_due(T, &built.key, "Example Grid Operator", TIMEOUT)
        .unwrap();
    assert_eq!(pass.sent, 2, "{pass:?}");
    let pk = built.key.public();
    assert_eq!(store.audit_sent(&pk).unwrap(), Vec::<String>::new());

    // The package's log may be cut back to its signed prefix and still verify on its own…
    let victim = &built.packages[0].id;
    let log_path = store.package_dir(victim).join("custody.jsonl");
    let log = std::fs::read_to_string(&log_path).unwrap();
    let cut: String = log.lines().take(4).map(|l| format!("{l}\n")).collect();
    std::fs::write(&log_path, &cut).unwrap();
    assert!(verify_path(&store.package_dir(victim), &pk).is_ok());
    // …but not against the ledger.
    let problems = store.audit_sent(&pk).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains(victim) && p.contains("no longer holds")),
        "{problems:?}"
    );
    std::fs::write(&log_path, &log).unwrap();
    assert!(store.audit_sent(&pk).unwrap().is_empty());

    // Cutting the ledger's tail orphans the later package's sent entry.
    let ledger_path = store.sent_ledger_path();
    let ledger = std::fs::read_to_string(&ledger_path).unwrap();
    let first: String = ledger.lines().take(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(&ledger_path, first).unwrap();
    let problems = store.audit_sent(&pk).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("is not in the sent ledger")),
        "{problems:?}"
    );

    // Removing the last delivery from both the package's log and the ledger's tail leaves
    // the outbox's record of it.
    let later = &built.packages[1].id;
    let later_log = store.package_dir(later).join("custody.jsonl");
    let text = std::fs::read_to_string(&later_log).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.contains("\"action\":\"sent\""))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(kept, text, "the package's log held a sent entry");
    std::fs::write(&later_log, kept).unwrap();
    let problems = store.audit_sent(&pk).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains(later) && p.contains("the outbox records 1 deliveries")),
        "{problems:?}"
    );
}

/// An alert whose packages were stored only in part (the packager stopped between two of
/// them) is not taken as packaged, so a restart stores the rest; once the packager recorded
/// it whole, its close delivered again is not packaged again.
#[test]
fn an_alert_packaged_in_part_is_packaged_again() {
    let built = build_all(T);
    let tmp = tempfile::tempdir().unwrap();
    let r = recipient(vec![]);
    let mut store = Store::open(&tmp.path().join("store")).unwrap();
    let alert = normwatch_evidence::sample::alert(&[]).id;
    assert!(store.put(&built.packages[0], &r, T).unwrap());
    assert!(!store.has_alert(&alert).unwrap());
    store.alert_packaged(&alert).unwrap();
    assert!(store.has_alert(&alert).unwrap());
    // The same package stored again is kept as first built.
    assert!(!store.put(&built.packages[0], &r, T).unwrap());
}
