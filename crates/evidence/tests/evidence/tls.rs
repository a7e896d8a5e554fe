//! Webhook and TAXII delivery over HTTPS on loopback, against a throwaway CA and server
//! certificate made with the `openssl` command: a Python `http.server` behind `ssl` as the
//! webhook, medallion behind Flask's TLS as the TAXII server. Also the rule that plain http
//! reaches loopback hosts only.

use super::delivery::{recipient, start_medallion, Server, COLLECTION, TIMEOUT};
use super::{build_all, T};
use normwatch_evidence::deliver::deliver;
use normwatch_evidence::recipients::{Channel, Directory};
use normwatch_evidence::store::{Store, FIRST_BACKOFF_NS};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A throwaway PKI: `ca` signed the server certificate `cert` (for 127.0.0.1 and localhost),
/// `other_ca` signed nothing the server presents.
struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run the openssl command line tool");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (key, pem, subj) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("/CN=normwatch test {name}"),
    );
    let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
    args.extend(EC);
    args.extend([
        "-keyout",
        &key,
        "-out",
        &pem,
        "-subj",
        &subj,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &args);
    dir.join(pem)
}

fn pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    let ca = make_ca(dir, "ca");
    let other_ca = make_ca(dir, "other-ca");
    let mut args = vec!["req", "-nodes"];
    args.extend(EC);
    args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &args);
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
    Pki {
        ca,
        other_ca,
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// An HTTPS webhook: a POST to `/moved` is redirected to plain http; every other POST is stored as `N.tar` (the body) and `N.json` (the headers,
/// lower-cased, and the path) before the 200 answer, so a delivery that returned has been
/// recorded. A failed handshake raises in `accept`, which `socketserver` skips.
const WEBHOOK: &str = r#"
import http.server, json, os, ssl, sys
cert, key, out = sys.argv[1:4]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', '0')))
        if self.path == '/moved':
            self.send_response(302)
            self.send_header('Location', f'http://127.0.0.1:{self.server.server_address[1]}/evidence')
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        n = len([f for f in os.listdir(out) if f.endswith('.json')])
        with open(os.path.join(out, f'{n}.tar'), 'wb') as f:
            f.write(body)
        head = {k.lower(): v for k, v in self.headers.items()}
        head['path'] = self.path
        with open(os.path.join(out, f'{n}.json'), 'w') as f:
            json.dump(head, f)
        self.send_response(200)
        self.send_header('Content-Length', '0')
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(('127.0.0.1', 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

struct Webhook {
    _server: Server,
    port: u16,
    out: PathBuf,
}

impl Webhook {
    fn start(pki: &Pki, dir: &Path) -> Webhook {
        let out = dir.join("webhook-received");
        std::fs::create_dir_all(&out).unwrap();
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(WEBHOOK)
            .arg(&pki.cert)
            .arg(&pki.key)
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3");
        let stdout = child.stdout.take().unwrap();
        let server = Server(child);
        // The server binds port 0 and says which port it got: no race for a free port.
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the HTTPS webhook did not start: {line:?}"));
        Webhook {
            _server: server,
            port,
            out,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/evidence", self.port)
    }

    /// The requests received so far: headers (and path) and body.
    fn received(&self) -> Vec<(serde_json::Value, Vec<u8>)> {
        (0..)
            .map_while(|n| {
                let head = std::fs::read(self.out.join(format!("{n}.json"))).ok()?;
                let body = std::fs::read(self.out.join(format!("{n}.tar"))).unwrap();
                Some((serde_json::from_slice(&head).unwrap(), body))
            })
            .collect()
    }
}

#[test]
fn a_webhook_over_https_with_the_channel_ca_receives_the_exact_tar() {
    let built = build_all(T);
    let p = &built.packages[1];
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(&tmp.path().join("pki"));
    let hook = Webhook::start(&pki, tmp.path());
    // Named relative to the recipients file, as an operator writes it.
    std::fs::copy(&pki.ca, tmp.path().join("de-ca.pem")).unwrap();
    let mut directory = Directory::parse(&format!(
        r#"
[[state]]
code = "DE"
name = "CERT-Bund"
[[state.channel]]
kind = "webhook"
url = "{}"
ca = "de-ca.pem"
"#,
        hook.url()
    ))
    .unwrap();
    directory.resolve_paths(tmp.path());
    let r = directory.get("DE").unwrap().clone();
    assert_eq!(
        r.channels[0],
        Channel::Webhook {
            url: hook.url(),
            token_env: None,
            ca: Some(tmp.path().join("de-ca.pem").display().to_string()),
        }
    );
    let mut store = Store::open(&tmp.path().join("store")).unwrap();
    store.put(p, &r, T).unwrap();
    let pass = store
        .deliver_due(T, &built.key, "NCSC-NL", TIMEOUT)
        .unwrap();
    assert_eq!((pass.sent, pass.failed.len()), (1, 0), "{pass:?}");
    let receipt = store.deliveries(&p.id).unwrap()[0].receipt.clone().unwrap();
    assert!(receipt.contains("HTTP 200"), "{receipt}");
    let got = hook.received();
    assert_eq!(got.len(), 1);
    let (head, body) = &got[0];
    assert_eq!(*body, std::fs::read(store.package_tar(&p.id)).unwrap());
    assert_eq!(head["idempotency-key"], p.id.as_str(), "{head}");
    assert_eq!(head["content-type"], "application/x-tar", "{head}");
    assert_eq!(head["path"], "/evidence", "{head}");
    assert_eq!(store.pending().unwrap(), 0);
    // A redirect to plain http is not followed, even to loopback.
    let moved = Channel::Webhook {
        url: format!("https://127.0.0.1:{}/moved", hook.port),
        token_env: None,
        ca: Some(pki.ca.display().to_string()),
    };
    let e = deliver(
        &moved,
        &p.id,
        &store.package_dir(&p.id),
        &store.package_tar(&p.id),
        TIMEOUT,
    )
    .unwrap_err()
    .0;
    assert!(e.contains("https only"), "{e}");
    assert_eq!(hook.received().len(), 1);
}

#[test]
fn an_untrusted_server_certificate_keeps_the_package_pending_until_the_ca_is_right() {
    let built = build_all(T);
    let p = &built.packages[1];
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(&tmp.path().join("pki"));
    let hook = Webhook::start(&pki, tmp.path());

    // No `ca`: the webpki roots do not know the throwaway CA.
    let r = recipient(vec![Channel::Webhook {
        url: hook.url(),
        token_env: None,
        ca: None,
    }]);
    let mut store = Store::open(&tmp.path().join("store-webpki")).unwrap();
    store.put(p, &r, T).unwrap();
    let pass = store
        .deliver_due(T, &built.key, "NCSC-NL", TIMEOUT)
        .unwrap();
    assert_eq!((pass.sent, pass.failed.len()), (0, 1), "{pass:?}");
    let e = pass.failed[0].1.to_string();
    for want in ["certificate not trusted", "webpki roots", "UnknownIssuer"] {
        assert!(e.contains(want), "{want}: {e}");
    }
    assert_eq!(store.pending().unwrap(), 1);
    assert!(hook.received().is_empty());

    // The operator's CA file holds a CA that did not sign the server's certificate.
    let ca_file = tmp.path().join("de-ca.pem");
    std::fs::copy(&pki.other_ca, &ca_file).unwrap();
    let r = recipient(vec![Channel::Webhook {
        url: hook.url(),
        token_env: None,
        ca: Some(ca_file.display().to_string()),
    }]);
    let mut store = Store::open(&tmp.path().join("store")).unwrap();
    store.put(p, &r, T).unwrap();
    let pass = store
        .deliver_due(T, &built.key, "NCSC-NL", TIMEOUT)
        .unwrap();
    assert_eq!((pass.sent, pass.failed.len()), (0, 1), "{pass:?}");
    let e = pass.failed[0].1.to_string();
    for want in [
        "certificate not trusted",
        &ca_file.display().to_string(),
        "UnknownIssuer",
    ] {
        assert!(e.contains(want), "{want}: {e}");
    }
    let d = store.deliveries(&p.id).unwrap();
    assert_eq!((d[0].sent, d[0].attempts), (false, 1));
    assert!(hook.received().is_empty());

    // The right CA put in place: the next pass after the backoff delivers it, once.
    std::fs::copy(&pki.ca, &ca_file).unwrap();
    let later = T + FIRST_BACKOFF_NS;
    let pass = store
        .deliver_due(later, &built.key, "NCSC-NL", TIMEOUT)
        .unwrap();
    assert_eq!((pass.sent, pass.failed.len()), (1, 0), "{pass:?}");
    let got = hook.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, std::fs::read(store.package_tar(&p.id)).unwrap());
    assert_eq!(got[0].0["idempotency-key"], p.id.as_str());
    assert_eq!(store.pending().unwrap(), 0);
}

fn one_channel(channel: &str) -> String {
    format!("[[state]]\ncode = \"DE\"\nname = \"CERT-Bund\"\n[[state.channel]]\n{channel}\n")
}

fn webhook(url: &str) -> String {
    one_channel(&format!("kind = \"webhook\"\nurl = \"{url}\""))
}

fn taxii(url: &str) -> String {
    one_channel(&format!(
        "kind = \"taxii\"\nurl = \"{url}\"\ncollection = \"{COLLECTION}\""
    ))
}

#[test]
fn plain_http_is_refused_at_load_unless_the_host_is_loopback() {
    for url in [
        "http://example.org/hook",
        "http://127.0.0.1.example.org/hook",
        "http://10.0.0.1:8080/hook",
        "HTTP://example.org/hook",
        "http://[2001:db8::1]/hook",
    ] {
        for (text, kind) in [(webhook(url), "webhook"), (taxii(url), "taxii")] {
            let e = Directory::parse(&text).unwrap_err().to_string();
            for want in [
                &format!("state[0] (DE): channel[0] ({kind})"),
                "plain http://",
                "not loopback",
                "https://",
            ] {
                assert!(e.contains(want), "{url}: {want}: {e}");
            }
        }
    }
    for url in [
        "http://127.0.0.1:8443/hook",
        "http://127.3.4.5/hook",
        "http://localhost:8080/hook",
        "http://LocalHost/hook",
        "http://[::1]:8080/hook",
        "https://example.org/hook",
        "https://192.0.2.7:8443/hook",
    ] {
        for text in [webhook(url), taxii(url)] {
            assert!(Directory::parse(&text).is_ok(), "{url}");
        }
    }
    // A CA only applies to TLS, and an empty one is a slip of the pen.
    let e = Directory::parse(&one_channel(
        "kind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nca = \"ca.pem\"",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("ca is set but"), "{e}");
    let e = Directory::parse(&one_channel(
        "kind = \"taxii\"\nurl = \"https://taxii.example/api1/\"\ncollection = \"c\"\nca = \"\"",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("channel[0] (taxii): ca is empty"), "{e}");
}

#[test]
fn a_queued_channel_is_checked_again_before_anything_is_sent() {
    let built = build_all(T);
    let p = &built.packages[1];
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(&tmp.path().join("store")).unwrap();
    let r = recipient(vec![]);
    store.put(p, &r, T).unwrap();
    let (dir, tar) = (store.package_dir(&p.id), store.package_tar(&p.id));
    // As an outbox row written before plain http was refused would hold it: refused by rule,
    // before any connection to the address (TEST-NET-1) is tried.
    let clear = Channel::Webhook {
        url: "http://192.0.2.1:9/hook".into(),
        token_env: None,
        ca: None,
    };
    let started = std::time::Instant::now();
    let e = deliver(&clear, &p.id, &dir, &tar, TIMEOUT).unwrap_err().0;
    assert!(e.contains("not loopback"), "{e}");
    assert!(started.elapsed() < TIMEOUT / 2);
    // A CA file that is missing or holds no certificate fails the delivery, naming the file.
    let not_pem = tmp.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, b"certainly not a certificate").unwrap();
    for (ca, want) in [
        (tmp.path().join("missing.pem"), "No such file"),
        (not_pem, "no PEM certificate"),
    ] {
        let c = Channel::Taxii {
            url: "https://127.0.0.1:9/api1/".into(),
            collection: COLLECTION.into(),
            user: None,
            password_env: None,
            ca: Some(ca.display().to_string()),
        };
        let e = deliver(&c, &p.id, &dir, &tar, TIMEOUT).unwrap_err().0;
        assert!(
            e.contains(&ca.display().to_string()) && e.contains(want),
            "{want}: {e}"
        );
    }
}

#[test]
fn taxii_push_over_https_to_medallion_once_the_ca_is_right() {
    let built = build_all(T);
    let p = &built.packages[1];
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(&tmp.path().join("pki"));
    let port = super::delivery::free_port();
    let _server = start_medallion(tmp.path(), port, Some((&pki.cert, &pki.key)));
    std::env::set_var("NORMWATCH_TEST_TAXII_PASSWORD", "s3cret-for-tests");
    let ca_file = tmp.path().join("de-ca.pem");
    std::fs::copy(&pki.other_ca, &ca_file).unwrap();
    let r = recipient(vec![Channel::Taxii {
        url: format!("https://127.0.0.1:{port}/api1/"),
        collection: COLLECTION.into(),
        user: Some("cert-bund".into()),
        password_env: Some("NORMWATCH_TEST_TAXII_PASSWORD".into()),
        ca: Some(ca_file.display().to_string()),
    }]);
    let mut store = Store::open(&tmp.path().join("store")).unwrap();
    store.put(p, &r, T).unwrap();
    let pass = store
        .deliver_due(T, &built.key, "NCSC-NL", TIMEOUT)
        .unwrap();
    assert_eq!((pass.sent, pass.failed.len()), (0, 1), "{pass:?}");
    let e = pass.failed[0].1.to_string();
    assert!(
        e.starts_with("taxii https://") && e.contains("UnknownIssuer"),
        "{e}"
    );
    assert_eq!(store.pending().unwrap(), 1);

    std::fs::copy(&pki.ca, &ca_file).unwrap();
    let pass = store
        .deliver_due(T + FIRST_BACKOFF_NS, &built.key, "NCSC-NL", TIMEOUT)
        .unwrap();
    assert_eq!((pass.sent, pass.failed.len()), (1, 0), "{pass:?}");
    let receipt = store.deliveries(&p.id).unwrap()[0].receipt.clone().unwrap();
    let bundle: serde_json::Value = serde_json::from_slice(&p.files["stix/bundle.json"]).unwrap();
    // Every object but the extension definition, which is not pushed.
    let n = bundle["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["type"] != "extension-definition")
        .count();
    assert!(
        receipt.contains(&format!(
            "complete: {n} new, 0 already held, of {n} objects"
        )),
        "{receipt}"
    );
}
