//! Flow packet counts against two other tools' ground truth for the same captures.
//!
//! 1. nDPI (`ndpiReader` results, `nDPI/tests/cfgs/default/result/*.out`): every flow line of
//!    every capture. nDPI's byte counts are whole frames (link layer included), so only
//!    packets are compared. Flows are keyed by the unordered endpoint pair and L4 protocol
//!    (ICMP by address pair only: nDPI prints ICMP ports as 0); our flows with the same key
//!    are summed (we split on Zeek's timers and on TCP reuse, nDPI does not), and the
//!    unordered pair {packets one way, packets the other way} must be equal. nDPI counts
//!    packets with bad checksums, so checksum verification is off.
//! 2. Suricata (`suricata-verify/tests/**/test.yaml`): every `event_type: flow` check with
//!    `flow.pkts_toserver` / `flow.pkts_toclient`, and every alert that embeds them. A filter
//!    matches as in suricata-verify: the fields it gives (addresses, ports, proto) constrain,
//!    the ones it leaves out match anything. An alert's counts are the flow's at the alerting
//!    packet (`pcap_cnt`), so for alerts the sensor runs over only the first `pcap_cnt` frames
//!    (alerts raised at flow timeout carry no `pcap_cnt` and see the final counts). Suricata's
//!    `toserver` is from the flow's `src`; our originator is compared as that `src` and,
//!    failing that, swapped: an orientation difference, reported apart and still a match (we
//!    pick the originator by Zeek's rules, e.g. a likely server port is never the originator
//!    of a mid-stream flow; Suricata takes the first packet's sender). Filters for older
//!    Suricata versions (`requires: lt-version`) and `count: 0` filters are skipped. Suricata's
//!    flow counters include packets with bad checksums even with
//!    `stream.checksum-validation=yes` (detect-chksum-01 expects `pkts_toserver: 1` for its
//!    bad-checksum packet; validation only affects the stream engine), so verification is off
//!    for every test. No test's `args` change flow accounting in a way that needs skipping
//!    (`--simulate-ips`, midstream and async-oneside settings were checked and match).
//!
//! Each source prints a per-capture table (ground-truth flows, matched, mismatched, missing),
//! the overall rates, the first mismatches with both sides' numbers, and notes.
//!
//! The remaining differences were examined one by one; they are counting conventions or a
//! documented decoder limit, not counting bugs:
//!
//! - nDPI `ip_fragmented_garbage.pcap` (1 flow missing): overlapping IPv4 fragments whose
//!   first fragments carry only 16 bytes of TCP, too few for a TCP header. nDPI files the four
//!   first fragments under TCP with ports 0; the sensor, which does not reassemble, cannot
//!   read the ports and drops them as `truncated_transport` (and the later fragments as
//!   orphans). See [`NDPI_CONVENTION`].
//! - Suricata `eve-flow-esp` (2 records differ): Suricata keys ESP flows by SPI too; the
//!   sensor, like Zeek, keys protocols without ports by address pair and protocol only, so
//!   SPIs 123 and 321 between one pair are one flow of 4 packets, not two of 2.
//!   See [`SURICATA_CONVENTION`].
//!
//! Matched, but printed as notes: Suricata flows that are several records of ours (packets
//! arriving after a FIN or RST closed the connection and its close timer ran start a new
//! mid-stream record, as in Zeek: bug-2646-01's FIN retransmissions, decode-teredo-01's late
//! RSTs), and flows whose
//! originator is Suricata's dest (bittorrent-dht: source port 20000 is DNP3's, a likely server
//! port; decode-teredo-01: 3544 and 80 likewise).
//!
//! Everything outside those classes matches, and the floors sit just below the achieved
//! rates, so any new difference fails the test.

#![allow(clippy::print_stdout)]

use normwatch_model::FlowRecord;
use normwatch_sensor::capture::file::read_file;
use normwatch_sensor::decode::DropReason;
use normwatch_sensor::{FlowConfig, FlowTable, SensorStats};
use normwatch_tests::{capture, config, files_under};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// nDPI captures whose differences are a documented counting convention (see the module doc).
const NDPI_CONVENTION: &[&str] = &["ip_fragmented_garbage.pcap"];
/// suricata-verify tests whose differences are a documented convention (see the module doc).
const SURICATA_CONVENTION: &[&str] = &["eve-flow-esp"];

/// Runs the flow table over the first `limit` frames of `path` (all when `None`), flushes, and
/// returns the flows and the sensor's counters.
fn flows_upto(path: &Path, cfg: FlowConfig, limit: Option<u64>) -> (Vec<FlowRecord>, SensorStats) {
    let mut table = FlowTable::new(cfg);
    let mut out = Vec::new();
    let mut n = 0u64;
    let res = read_file(path, |f| {
        n += 1;
        if limit.is_none_or(|l| n <= l) {
            table.process_frame(f.link, f.data, f.wire_len, f.ts_ns, &mut out);
        }
    });
    if let Err(e) = res {
        println!(
            "  note: {}: {e} (flows up to the error kept)",
            path.display()
        );
    }
    table.flush(&mut out);
    (out, table.stats().clone())
}

/// The sensor's non-zero drop counters, for explaining a missing flow.
fn drops(stats: &SensorStats) -> String {
    let mut d: Vec<String> = DropReason::ALL
        .iter()
        .filter(|r| stats.drops_for(**r) > 0)
        .map(|r| format!("{} {}", r.as_str(), stats.drops_for(*r)))
        .collect();
    if stats.fragments_orphaned > 0 {
        d.push(format!("orphaned fragments {}", stats.fragments_orphaned));
    }
    if d.is_empty() {
        "none".to_string()
    } else {
        d.join(", ")
    }
}

/// One endpoint: address and port (0 for ICMP and protocols without ports).
type Endpoint = (IpAddr, u16);

/// Canonical key: protocol and the endpoints in ascending order.
type PairKey = (u8, Endpoint, Endpoint);

fn pair_key(proto: u8, a: Endpoint, b: Endpoint) -> (PairKey, bool) {
    let (a, b) = if matches!(proto, 1 | 58) {
        ((a.0, 0), (b.0, 0))
    } else {
        (a, b)
    };
    if a <= b {
        ((proto, a, b), false)
    } else {
        ((proto, b, a), true)
    }
}

/// Our flows summed by unordered key: packets from the lower endpoint, from the higher one,
/// and how many records were summed.
fn sum_by_pair(flows: &[FlowRecord]) -> HashMap<PairKey, ([u64; 2], usize)> {
    let mut m: HashMap<PairKey, ([u64; 2], usize)> = HashMap::new();
    for f in flows {
        let (k, swapped) = pair_key(
            f.ip_proto,
            (f.orig_addr, f.orig_port),
            (f.resp_addr, f.resp_port),
        );
        let e = m.entry(k).or_default();
        let (lo, hi) = if swapped {
            (f.resp.pkts, f.orig.pkts)
        } else {
            (f.orig.pkts, f.resp.pkts)
        };
        e.0[0] += lo;
        e.0[1] += hi;
        e.1 += 1;
    }
    m
}

fn fmt_key(k: &PairKey) -> String {
    let ep = |e: &Endpoint| match e.0 {
        IpAddr::V6(a) => format!("[{a}]:{}", e.1),
        IpAddr::V4(a) => format!("{a}:{}", e.1),
    };
    format!("p{} {} <-> {}", k.0, ep(&k.1), ep(&k.2))
}

#[derive(Default)]
struct Tally {
    flows: usize,
    matched: usize,
    mismatched: usize,
    missing: usize,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.flows += o.flows;
        self.matched += o.matched;
        self.mismatched += o.mismatched;
        self.missing += o.missing;
    }

    fn pct(&self) -> f64 {
        if self.flows == 0 {
            100.0
        } else {
            100.0 * self.matched as f64 / self.flows as f64
        }
    }
}

// ---------------------------------------------------------------------------------------------
// nDPI

struct NdpiFlow {
    key: PairKey,
    /// Packets from the key's lower endpoint, from the higher one.
    pkts: [u64; 2],
}

fn parse_endpoint(s: &str) -> Option<Endpoint> {
    let (addr, port) = if let Some(rest) = s.strip_prefix('[') {
        let (a, p) = rest.split_once("]:")?;
        (a, p)
    } else {
        s.rsplit_once(':')?
    };
    Some((addr.parse().ok()?, port.parse().ok()?))
}

/// `N pkts/M bytes` → N.
fn pkts_of(s: &str) -> Option<u64> {
    s.trim().split_once(" pkts/")?.0.trim().parse().ok()
}

/// The flow lines of an ndpiReader `.out` file, and the lines it could not use.
fn parse_ndpi(text: &str) -> (Vec<NdpiFlow>, Vec<String>) {
    let mut flows = Vec::new();
    let mut skipped = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if !line.starts_with('\t') || !t.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let mut w = t.split_whitespace();
        let (_idx, proto, a, arrow, b) = (w.next(), w.next(), w.next(), w.next(), w.next());
        let proto = match proto {
            Some("TCP") => 6,
            Some("UDP") => 17,
            Some("ICMP") => 1,
            Some("ICMPV6") | Some("ICMP6") => 58,
            _ => {
                skipped.push(format!("unsupported protocol: {}", short(t)));
                continue;
            }
        };
        let (Some(a), Some(b)) = (a.and_then(parse_endpoint), b.and_then(parse_endpoint)) else {
            skipped.push(format!("unparsable endpoints: {}", short(t)));
            continue;
        };
        if !matches!(arrow, Some("<->") | Some("->")) {
            skipped.push(format!("unknown direction: {}", short(t)));
            continue;
        }
        // The bracket holding "N pkts/M bytes <-> N pkts/M bytes".
        let Some(at) = t.find(" pkts/") else {
            skipped.push(format!("no packet counts: {}", short(t)));
            continue;
        };
        let open = t[..at].rfind('[').map_or(0, |i| i + 1);
        let close = t[at..].find(']').map_or(t.len(), |i| at + i);
        let counts = &t[open..close];
        let (x, y) = match counts
            .split_once(" <-> ")
            .or_else(|| counts.split_once(" -> "))
        {
            Some((x, y)) => (pkts_of(x), pkts_of(y)),
            None => (pkts_of(counts), Some(0)),
        };
        let (Some(x), Some(y)) = (x, y) else {
            skipped.push(format!("unparsable counts: {}", short(t)));
            continue;
        };
        let (key, swapped) = pair_key(proto, a, b);
        let pkts = if swapped { [y, x] } else { [x, y] };
        flows.push(NdpiFlow { key, pkts });
    }
    (flows, skipped)
}

fn short(s: &str) -> String {
    s.chars().take(110).collect()
}

fn unordered(p: [u64; 2]) -> [u64; 2] {
    [p[0].min(p[1]), p[0].max(p[1])]
}

/// Returns (all flows, flows outside the documented conventions) tallies.
fn ndpi_crosscheck() -> (Tally, Tally) {
    let base = capture("nDPI/tests/cfgs/default");
    let mut outs: Vec<PathBuf> = std::fs::read_dir(base.join("result"))
        .expect("nDPI results in the shared data")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "out"))
        .collect();
    outs.sort();
    assert!(outs.len() >= 30, "only {} nDPI results", outs.len());
    let (mut total, mut strict) = (Tally::default(), Tally::default());
    let mut mismatches = Vec::new();
    let mut notes = Vec::new();
    let mut orientation = 0usize;
    println!("nDPI: packets per flow (unordered pair of directions), checksums not verified");
    println!(
        "{:<34} {:>6} {:>7} {:>10} {:>7} {:>6}",
        "capture", "flows", "matched", "mismatched", "missing", "extra"
    );
    for out in &outs {
        let name = out.file_stem().unwrap().to_string_lossy().to_string();
        let pcap = base.join("pcap").join(&name);
        let text = std::fs::read_to_string(out).unwrap();
        let (gt, skipped) = parse_ndpi(&text);
        for s in skipped {
            notes.push(format!("{name}: {s}"));
        }
        // nDPI's own flows with one key (e.g. in two VLANs) are summed too.
        let mut want: BTreeMap<PairKey, [u64; 2]> = BTreeMap::new();
        for f in &gt {
            let e = want.entry(f.key).or_default();
            e[0] += f.pkts[0];
            e[1] += f.pkts[1];
        }
        let (flows, stats) = flows_upto(&pcap, config(false), None);
        let ours = sum_by_pair(&flows);
        let mut t = Tally {
            flows: want.len(),
            ..Tally::default()
        };
        for (k, w) in &want {
            match ours.get(k) {
                None => {
                    t.missing += 1;
                    mismatches.push(format!("{name}: {} nDPI {w:?} ours: none", fmt_key(k)));
                }
                Some((got, n)) if unordered(*got) == unordered(*w) => {
                    t.matched += 1;
                    if got != w {
                        orientation += 1;
                        notes.push(format!(
                            "{name}: {} directions swapped: nDPI {w:?} ours {got:?} ({n} records)",
                            fmt_key(k)
                        ));
                    }
                }
                Some((got, n)) => {
                    t.mismatched += 1;
                    mismatches.push(format!(
                        "{name}: {} nDPI {w:?} ours {got:?} ({n} records)",
                        fmt_key(k)
                    ));
                }
            }
        }
        let extra = ours
            .keys()
            .filter(|k| matches!(k.0, 1 | 6 | 17 | 58) && !want.contains_key(*k))
            .count();
        println!(
            "{:<34} {:>6} {:>7} {:>10} {:>7} {:>6}",
            name, t.flows, t.matched, t.mismatched, t.missing, extra
        );
        if t.matched < t.flows {
            notes.push(format!("{name}: sensor drops: {}", drops(&stats)));
        }
        total.add(&t);
        if !NDPI_CONVENTION.contains(&name.as_str()) {
            strict.add(&t);
        }
    }
    println!(
        "nDPI total: {} flows, matched {} ({:.2}%), mismatched {}, missing {}; \
         {orientation} matched with directions swapped",
        total.flows,
        total.matched,
        total.pct(),
        total.mismatched,
        total.missing
    );
    println!(
        "nDPI outside documented conventions: {} flows, matched {} ({:.2}%)",
        strict.flows,
        strict.matched,
        strict.pct()
    );
    for m in mismatches.iter().take(30) {
        println!("  mismatch {m}");
    }
    if mismatches.len() > 30 {
        println!("  … {} more mismatches", mismatches.len() - 30);
    }
    for n in notes.iter().take(20) {
        println!("  note {n}");
    }
    (total, strict)
}

// ---------------------------------------------------------------------------------------------
// Suricata

#[derive(Debug, Default)]
struct Filter {
    count: Option<u64>,
    /// The filter is for Suricata versions before some version (`requires: lt-version`).
    lt_version: bool,
    fields: HashMap<String, String>,
}

#[derive(Debug, Default)]
struct TestYaml {
    /// The whole test requires an older Suricata (a duplicate of a newer test).
    lt_version: bool,
    args: Vec<String>,
    pcap: Option<String>,
    filters: Vec<Filter>,
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    for q in ['\'', '"'] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_string();
        }
    }
    v.to_string()
}

/// A line-based reader for the parts of suricata-verify's test.yaml used here: top-level
/// `requires`, `args`, `pcap`, and the `match` blocks of `checks: - filter:` items.
fn parse_test_yaml(text: &str) -> TestYaml {
    let mut y = TestYaml::default();
    let mut section = String::new();
    let mut item_indent: Option<usize> = None;
    let mut cur: Option<Filter> = None;
    let mut in_match: Option<usize> = None;
    let mut key_indent: Option<usize> = None;
    for raw in text.lines() {
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let indent = raw.len() - raw.trim_start().len();
        if indent == 0 && !t.starts_with('-') {
            let (k, v) = t.split_once(':').unwrap_or((t, ""));
            section = k.trim().to_string();
            if section == "pcap" && !v.trim().is_empty() && v.trim() != "false" {
                y.pcap = Some(unquote(v));
            }
            continue;
        }
        match section.as_str() {
            "requires" => y.lt_version |= t.starts_with("lt-version"),
            "args" => {
                if let Some(a) = t.strip_prefix("- ") {
                    y.args.push(a.trim().to_string());
                }
            }
            "checks" => {
                if t.starts_with("- ") && item_indent.is_none_or(|i| i == indent) {
                    item_indent = Some(indent);
                    y.filters.extend(cur.take());
                    in_match = None;
                    if t == "- filter:" {
                        cur = Some(Filter::default());
                    }
                    continue;
                }
                let Some(f) = cur.as_mut() else { continue };
                if let Some(mi) = in_match {
                    if indent > mi {
                        let ki = *key_indent.get_or_insert(indent);
                        if indent == ki {
                            if let Some((k, v)) = t.split_once(':') {
                                f.fields.insert(k.trim().to_string(), unquote(v));
                            }
                        }
                        continue;
                    }
                    in_match = None;
                }
                if t == "match:" {
                    in_match = Some(indent);
                    key_indent = None;
                } else if let Some(c) = t.strip_prefix("count:") {
                    f.count = c.trim().parse().ok();
                } else if t.starts_with("lt-version") {
                    f.lt_version = true;
                }
            }
            _ => {}
        }
    }
    y.filters.extend(cur);
    y
}

/// One Suricata flow record (or an alert's snapshot of one), as the filter's constraints: a
/// field the filter leaves out matches anything, as in suricata-verify itself.
#[derive(Debug)]
struct SuriFlow {
    test: String,
    kind: &'static str,
    proto: Option<u8>,
    src_ip: Option<IpAddr>,
    src_port: Option<u16>,
    dst_ip: Option<IpAddr>,
    dst_port: Option<u16>,
    /// Packets toserver (from `src`), toclient.
    pkts: [u64; 2],
    /// Whether `src` is known to be the flow's source (false for an alert that names only the
    /// packet's endpoints and not its direction).
    oriented: bool,
    /// For alerts: the flow's counts are as of this frame.
    pcap_cnt: Option<u64>,
}

impl SuriFlow {
    /// The whole tuple is given (ports only for protocols that have them).
    fn complete(&self) -> bool {
        let ports = self.src_port.is_some() && self.dst_port.is_some();
        self.src_ip.is_some()
            && self.dst_ip.is_some()
            && match self.proto {
                Some(6 | 17 | 132) => ports,
                Some(_) => true,
                None => false,
            }
    }

    fn describe(&self, count: u64) -> String {
        let ip = |a: Option<IpAddr>| a.map_or("*".to_string(), |a| a.to_string());
        let port = |p: Option<u16>| p.map_or("*".to_string(), |p| p.to_string());
        let mut d = format!(
            "{}: {} p{} {}:{} -> {}:{}",
            self.test,
            self.kind,
            self.proto.map_or("*".to_string(), |p| p.to_string()),
            ip(self.src_ip),
            port(self.src_port),
            ip(self.dst_ip),
            port(self.dst_port)
        );
        if let Some(n) = self.pcap_cnt {
            let _ = write!(d, " @pcap_cnt {n}");
        }
        if count > 1 {
            let _ = write!(d, " (count {count})");
        }
        d
    }
}

fn suri_flow(test: &str, f: &Filter) -> Result<Option<SuriFlow>, String> {
    let g = |k: &str| f.fields.get(k).map(String::as_str);
    let kind = match g("event_type") {
        Some("flow") => "flow",
        Some("alert") => "alert",
        _ => return Ok(None),
    };
    let (Some(ts), Some(tc)) = (g("flow.pkts_toserver"), g("flow.pkts_toclient")) else {
        return Ok(None);
    };
    let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{test}: {v}: {e}"));
    let pkts = [num(ts)?, num(tc)?];
    // Alerts name the flow's own endpoints in flow.src_ip etc. when the version has them;
    // otherwise the packet's, which are reversed for a to_client alert, and of unknown
    // direction when the alert does not say.
    let mut oriented = true;
    let (sip, sport, dip, dport) = if kind == "alert" && g("flow.src_ip").is_some() {
        (
            g("flow.src_ip"),
            g("flow.src_port"),
            g("flow.dest_ip"),
            g("flow.dest_port"),
        )
    } else if kind == "alert" && g("direction") == Some("to_client") {
        (g("dest_ip"), g("dest_port"), g("src_ip"), g("src_port"))
    } else {
        oriented = kind == "flow" || g("direction") == Some("to_server");
        (g("src_ip"), g("src_port"), g("dest_ip"), g("dest_port"))
    };
    let ip = |v: Option<&str>| {
        v.map(|v| v.parse::<IpAddr>().map_err(|e| format!("{test}: {v}: {e}")))
            .transpose()
    };
    let port = |v: Option<&str>| {
        v.map(|v| v.parse::<u16>().map_err(|e| format!("{test}: {v}: {e}")))
            .transpose()
    };
    let (src_ip, dst_ip) = (ip(sip)?, ip(dip)?);
    let v6 = src_ip.or(dst_ip).is_some_and(|a| a.is_ipv6());
    let proto = match g("proto") {
        Some("TCP") => Some(6),
        Some("UDP") => Some(17),
        Some("ICMP") if v6 => Some(58),
        Some("ICMP") => Some(1),
        Some("IPv6-ICMP") | Some("ICMPv6") => Some(58),
        Some("SCTP") => Some(132),
        Some("ESP") => Some(50),
        Some(other) => return Err(format!("{test}: unknown proto {other}")),
        None if g("spi").is_some() => Some(50),
        None if g("icmp_type").is_some() => Some(if v6 { 58 } else { 1 }),
        None => None,
    };
    let pcap_cnt = g("pcap_cnt").map(num).transpose()?;
    Ok(Some(SuriFlow {
        test: test.to_string(),
        kind,
        proto,
        src_ip,
        src_port: port(sport)?,
        dst_ip,
        dst_port: port(dport)?,
        pkts,
        oriented,
        pcap_cnt: if kind == "alert" { pcap_cnt } else { None },
    }))
}

/// Our flows that satisfy the Suricata filter, each as [packets from Suricata's src, from its
/// dest] and whether our originator is that src. A flow fitting both ways (a loose filter)
/// is listed both ways.
fn ours_for(flows: &[FlowRecord], s: &SuriFlow) -> Vec<([u64; 2], bool)> {
    let mut out = Vec::new();
    for f in flows {
        if s.proto.is_some_and(|p| p != f.ip_proto) {
            continue;
        }
        let ports = matches!(f.ip_proto, 6 | 17 | 132);
        let fits = |a: (IpAddr, u16), b: (IpAddr, u16)| {
            s.src_ip.is_none_or(|x| x == a.0)
                && s.dst_ip.is_none_or(|x| x == b.0)
                && (!ports || s.src_port.is_none_or(|x| x == a.1))
                && (!ports || s.dst_port.is_none_or(|x| x == b.1))
        };
        let o = (f.orig_addr, f.orig_port);
        let r = (f.resp_addr, f.resp_port);
        if fits(o, r) {
            out.push(([f.orig.pkts, f.resp.pkts], true));
        }
        if fits(r, o) {
            out.push(([f.resp.pkts, f.orig.pkts], false));
        }
    }
    out
}

/// The capture a test runs on: `pcap:` if named, else input.pcap, else the only capture.
fn test_pcap(dir: &Path, y: &TestYaml) -> Option<PathBuf> {
    if let Some(p) = &y.pcap {
        return Some(dir.join(p));
    }
    if dir.join("input.pcap").exists() {
        return Some(dir.join("input.pcap"));
    }
    let caps: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "pcap" || e == "pcapng" || e == "cap")
        })
        .collect();
    (caps.len() == 1).then(|| caps[0].clone())
}

/// Returns (all records, records outside the documented conventions) tallies.
fn suricata_crosscheck() -> (Tally, Tally) {
    let root = capture("suricata-verify/tests");
    let yamls = files_under(&root, &|p| p.file_name().is_some_and(|n| n == "test.yaml"));
    assert!(
        yamls.len() >= 50,
        "only {} suricata-verify tests",
        yamls.len()
    );
    let (mut total, mut strict) = (Tally::default(), Tally::default());
    let mut mismatches = Vec::new();
    let mut notes = Vec::new();
    let mut orientation = Vec::new();
    println!();
    println!("Suricata: packets toserver/toclient per flow record (alerts: as of pcap_cnt)");
    println!(
        "{:<58} {:>6} {:>7} {:>10} {:>7}",
        "test", "flows", "matched", "mismatched", "missing"
    );
    for yaml in &yamls {
        let dir = yaml.parent().unwrap();
        let test = dir
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let y = parse_test_yaml(&std::fs::read_to_string(yaml).unwrap());
        let mut checks = Vec::new();
        let (mut old, mut zero) = (0, 0);
        for f in &y.filters {
            match suri_flow(&test, f) {
                Ok(Some(_)) if f.count == Some(0) => zero += 1,
                Ok(Some(_)) if f.lt_version => old += 1,
                Ok(Some(s)) => checks.push((s, f.count.unwrap_or(1))),
                Ok(None) => {}
                Err(e) => notes.push(e),
            }
        }
        if checks.is_empty() {
            continue;
        }
        if old + zero > 0 {
            notes.push(format!(
                "{test}: skipped {old} filter(s) for older Suricata versions, {zero} with count 0"
            ));
        }
        if y.lt_version {
            notes.push(format!(
                "{test}: skipped, the test is for older Suricata versions only"
            ));
            continue;
        }
        let Some(pcap) = test_pcap(dir, &y) else {
            notes.push(format!("{test}: no capture found"));
            continue;
        };
        if !y.args.is_empty() && y.args.iter().any(|a| a != "-k none") {
            notes.push(format!("{test}: args {:?}", y.args));
        }
        let (full, stats) = flows_upto(&pcap, config(false), None);
        let mut t = Tally::default();
        for (s, count) in &checks {
            t.flows += 1;
            let snapshot;
            let flows = match s.pcap_cnt {
                Some(n) => {
                    snapshot = flows_upto(&pcap, config(false), Some(n)).0;
                    &snapshot
                }
                None => &full,
            };
            let cands = ours_for(flows, s);
            let desc = || s.describe(*count);
            if y.args.iter().any(|a| a.contains("checksum-validation=yes")) {
                let strict = flows_upto(&pcap, config(true), s.pcap_cnt).0;
                let with: Vec<_> = ours_for(&strict, s).iter().map(|c| c.0).collect();
                notes.push(format!(
                    "{}: Suricata {:?}; with checksum verification on, ours would be {with:?}",
                    desc(),
                    s.pkts
                ));
            }
            let list = || cands.iter().map(|c| c.0).collect::<Vec<_>>();
            if cands.is_empty() {
                t.missing += 1;
                mismatches.push(format!("{} Suricata {:?} ours: none", desc(), s.pkts));
                continue;
            }
            // An alert that does not say which side is the flow's source may have either.
            let swapped = [s.pkts[1], s.pkts[0]];
            let fits = |p: &[u64; 2]| *p == s.pkts || (!s.oriented && *p == swapped);
            let same = cands.iter().any(|(p, o)| fits(p) && *o);
            let other = cands.iter().any(|(p, o)| fits(p) && !*o);
            // Flows we split (Zeek's timers, TCP reuse) are summed when the tuple is complete;
            // each record's packets are already counted from Suricata's src.
            let sum = cands
                .iter()
                .fold([0u64; 2], |a, (p, _)| [a[0] + p[0], a[1] + p[1]]);
            if same {
                t.matched += 1;
            } else if other {
                t.matched += 1;
                if s.oriented {
                    orientation.push(format!("{} (our originator is Suricata's dest)", desc()));
                }
            } else if s.complete() && cands.len() > 1 && fits(&sum) {
                t.matched += 1;
                notes.push(format!(
                    "{}: matched as the sum of {} of ours",
                    desc(),
                    cands.len()
                ));
                if s.oriented && cands.iter().any(|c| !c.1) {
                    orientation.push(format!(
                        "{} (in some of our records the originator is Suricata's dest)",
                        desc()
                    ));
                }
            } else {
                t.mismatched += 1;
                mismatches.push(format!(
                    "{} Suricata {:?} ours {:?}",
                    desc(),
                    s.pkts,
                    list()
                ));
            }
        }
        if t.matched < t.flows {
            notes.push(format!("{test}: sensor drops: {}", drops(&stats)));
        }
        println!(
            "{:<58} {:>6} {:>7} {:>10} {:>7}",
            test, t.flows, t.matched, t.mismatched, t.missing
        );
        total.add(&t);
        if !SURICATA_CONVENTION.contains(&test.as_str()) {
            strict.add(&t);
        }
    }
    println!(
        "Suricata total: {} records, matched {} ({:.2}%), mismatched {}, missing {}; \
         {} matched with our originator on Suricata's dest side",
        total.flows,
        total.matched,
        total.pct(),
        total.mismatched,
        total.missing,
        orientation.len()
    );
    println!(
        "Suricata outside documented conventions: {} records, matched {} ({:.2}%)",
        strict.flows,
        strict.matched,
        strict.pct()
    );
    for m in mismatches.iter().take(30) {
        println!("  mismatch {m}");
    }
    if mismatches.len() > 30 {
        println!("  … {} more mismatches", mismatches.len() - 30);
    }
    for o in &orientation {
        println!("  orientation {o}");
    }
    for n in &notes {
        println!("  note {n}");
    }
    (total, strict)
}

#[test]
fn flows_match_ndpi_and_suricata() {
    let (ndpi, ndpi_strict) = ndpi_crosscheck();
    let (suri, suri_strict) = suricata_crosscheck();
    println!();
    println!(
        "summary: nDPI {:.2}% of {} flows ({:.2}% outside conventions), \
         Suricata {:.2}% of {} records ({:.2}% outside conventions)",
        ndpi.pct(),
        ndpi.flows,
        ndpi_strict.pct(),
        suri.pct(),
        suri.flows,
        suri_strict.pct()
    );
    // Achieved: nDPI 762 of 763 flows (99.87%), Suricata 297 of 299 records (99.33%); one
    // more difference in either fails. Outside the documented classes everything matches.
    assert!(ndpi.flows >= 760, "only {} nDPI flows parsed", ndpi.flows);
    assert!(
        suri.flows >= 295,
        "only {} Suricata records parsed",
        suri.flows
    );
    assert!(ndpi.pct() >= 99.8, "nDPI: only {:.2}% matched", ndpi.pct());
    assert!(
        suri.pct() >= 99.3,
        "Suricata: only {:.2}% matched",
        suri.pct()
    );
    assert_eq!(
        ndpi_strict.matched, ndpi_strict.flows,
        "nDPI flows outside the documented conventions differ"
    );
    assert_eq!(
        suri_strict.matched, suri_strict.flows,
        "Suricata records outside the documented conventions differ"
    );
}
