//! Cross-checks of per-direction packet counts against two other tools' ground truth for the
//! same captures: nDPI's flow summaries (`nDPI/tests/cfgs/default/result/*.out`) and the
//! Suricata flow events expected by suricata-verify (`tests/**/test.yaml`).
//!
//! Bytes are not compared: both tools count link-layer frame bytes, normwatch (like Zeek)
//! counts IP bytes. Both tools count packets whose checksums are wrong, so checksum
//! verification is off here. Flows are matched on the unordered endpoint pair and protocol,
//! summing normwatch's flows for the pair (the tools time flows out differently).

#![allow(clippy::print_stdout)]

use normwatch_model::FlowRecord;
use normwatch_tests::{capture, config, flows_of};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

type Endpoint = (String, u16);

/// Packets each endpoint sent, per unordered endpoint pair and protocol.
fn packets_by_pair(
    flows: &[FlowRecord],
) -> HashMap<(Endpoint, Endpoint, u8), HashMap<Endpoint, u64>> {
    let mut m: HashMap<_, HashMap<Endpoint, u64>> = HashMap::new();
    for f in flows {
        let o = (f.orig_addr.to_string(), f.orig_port);
        let r = (f.resp_addr.to_string(), f.resp_port);
        let key = if o <= r {
            (o.clone(), r.clone(), f.ip_proto)
        } else {
            (r.clone(), o.clone(), f.ip_proto)
        };
        let e = m.entry(key).or_default();
        *e.entry(o).or_default() += f.orig.pkts;
        *e.entry(r).or_default() += f.resp.pkts;
    }
    m
}

#[derive(Debug)]
struct Expect {
    capture: PathBuf,
    proto: u8,
    src: Endpoint,
    dst: Endpoint,
    src_pkts: u64,
    dst_pkts: u64,
}

#[derive(Default)]
struct Tally {
    total: usize,
    matched: usize,
    missing: usize,
    misses: Vec<String>,
}

fn check(expects: &[Expect]) -> Tally {
    let mut by_capture: HashMap<&Path, Vec<&Expect>> = HashMap::new();
    for e in expects {
        by_capture.entry(e.capture.as_path()).or_default().push(e);
    }
    let mut t = Tally::default();
    let mut caps: Vec<_> = by_capture.into_iter().collect();
    caps.sort_by_key(|(p, _)| p.to_path_buf());
    for (cap, list) in caps {
        let flows = match flows_of(cap, config(false)) {
            Ok((f, _)) => f,
            Err((f, e)) => {
                println!(
                    "  {}: {e} (using the {} flows before the fault)",
                    cap.display(),
                    f.len()
                );
                f
            }
        };
        let ours = packets_by_pair(&flows);
        for e in list {
            t.total += 1;
            let key = if e.src <= e.dst {
                (e.src.clone(), e.dst.clone(), e.proto)
            } else {
                (e.dst.clone(), e.src.clone(), e.proto)
            };
            match ours.get(&key) {
                None => {
                    t.missing += 1;
                    t.misses.push(format!(
                        "{}: {:?} -> {:?} not found",
                        cap.display(),
                        e.src,
                        e.dst
                    ));
                }
                Some(p) => {
                    let got = (
                        p.get(&e.src).copied().unwrap_or(0),
                        p.get(&e.dst).copied().unwrap_or(0),
                    );
                    if got == (e.src_pkts, e.dst_pkts) {
                        t.matched += 1;
                    } else {
                        t.misses.push(format!(
                            "{}: {:?} -> {:?} want {}/{} got {}/{}",
                            cap.display(),
                            e.src,
                            e.dst,
                            e.src_pkts,
                            e.dst_pkts,
                            got.0,
                            got.1
                        ));
                    }
                }
            }
        }
    }
    t
}

/// `1.2.3.4:80`, `[2001:db8::1]:53`.
fn endpoint(s: &str) -> Option<Endpoint> {
    let (addr, port) = s.rsplit_once(':')?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = addr.parse().ok()?;
    Some((ip.to_string(), port.parse().ok()?))
}

fn ndpi_expectations() -> Vec<Expect> {
    let dir = capture("nDPI/tests/cfgs/default");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir.join("result")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(cap_name) = name.strip_suffix(".out") else {
            continue;
        };
        let cap = dir.join("pcap").join(cap_name);
        if !cap.exists() {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let mut words = line.split_whitespace();
            let (Some(idx), Some(proto)) = (words.next(), words.next()) else {
                continue;
            };
            if idx.parse::<u32>().is_err() {
                continue;
            }
            let proto = match proto {
                "TCP" => 6,
                "UDP" => 17,
                _ => continue,
            };
            let (Some(a), Some(arrow), Some(b)) = (words.next(), words.next(), words.next()) else {
                continue;
            };
            if arrow != "<->" && arrow != "->" {
                continue;
            }
            let (Some(src), Some(dst)) = (endpoint(a), endpoint(b)) else {
                continue;
            };
            // "[7 pkts/987 bytes <-> 5 pkts/270 bytes]"
            let Some(start) = line.find(" pkts/") else {
                continue;
            };
            let head = &line[..start];
            let src_pkts: u64 = head[head.rfind('[').unwrap() + 1..].parse().unwrap();
            let rest = &line[start + 6..];
            let rest = &rest[rest.find("-> ").unwrap() + 3..];
            let dst_pkts: u64 = rest[..rest.find(" pkts").unwrap()].parse().unwrap();
            out.push(Expect {
                capture: cap.clone(),
                proto,
                src,
                dst,
                src_pkts,
                dst_pkts,
            });
        }
    }
    out
}

/// Flow events (end of flow) from suricata-verify's test.yaml files, parsed as far as the
/// flat `match:` keys go.
fn suricata_expectations() -> Vec<Expect> {
    let root = capture("suricata-verify/tests");
    let mut yamls = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "test.yaml") {
                yamls.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for y in yamls {
        let dir = y.parent().unwrap();
        let pcaps: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
            .collect();
        let text = std::fs::read_to_string(&y).unwrap();
        // Runs that change what a flow is (other configs, multiple inputs) are not comparable.
        if pcaps.len() != 1
            || text.contains("\npcap:")
            || text.contains("-c ")
            || text.contains("--set flow")
        {
            continue;
        }
        for filter in text.split("- filter:").skip(1) {
            let mut count = None;
            let mut kv = HashMap::new();
            let mut match_indent = None;
            for line in filter.lines() {
                let indent = line.len() - line.trim_start().len();
                let l = line.trim();
                if let Some(c) = l.strip_prefix("count: ") {
                    count = c.parse::<u32>().ok();
                } else if l == "match:" {
                    match_indent = Some(indent);
                } else if let Some(mi) = match_indent {
                    if indent == mi + 2 {
                        if let Some((k, v)) = l.split_once(": ") {
                            kv.insert(k.to_string(), v.trim_matches('"').to_string());
                        }
                    } else if indent <= mi {
                        break;
                    }
                }
            }
            if count == Some(0) || kv.get("event_type").map(String::as_str) != Some("flow") {
                continue;
            }
            let get = |k: &str| kv.get(k).cloned();
            let (Some(si), Some(sp), Some(di), Some(dp), Some(p), Some(ts), Some(tc)) = (
                get("src_ip"),
                get("src_port"),
                get("dest_ip"),
                get("dest_port"),
                get("proto"),
                get("flow.pkts_toserver"),
                get("flow.pkts_toclient"),
            ) else {
                continue;
            };
            let proto = match p.as_str() {
                "TCP" => 6,
                "UDP" => 17,
                _ => continue,
            };
            let (Some(src), Some(dst)) = (
                endpoint(&format!("{si}:{sp}")),
                endpoint(&format!("{di}:{dp}")),
            ) else {
                continue;
            };
            out.push(Expect {
                capture: pcaps[0].clone(),
                proto,
                src,
                dst,
                src_pkts: ts.parse().unwrap(),
                dst_pkts: tc.parse().unwrap(),
            });
        }
    }
    out
}

fn report(name: &str, t: &Tally) -> f64 {
    let pct = 100.0 * t.matched as f64 / t.total.max(1) as f64;
    println!(
        "{name}: {} flows, {} with identical packets both ways ({pct:.1}%), {} differing, {} not found",
        t.total,
        t.matched,
        t.total - t.matched - t.missing,
        t.missing
    );
    for m in t.misses.iter().take(30) {
        println!("  {m}");
    }
    pct
}

#[test]
fn packets_per_direction_agree_with_ndpi() {
    let expects = ndpi_expectations();
    assert!(expects.len() > 500, "{} nDPI flows parsed", expects.len());
    let t = check(&expects);
    let pct = report("nDPI", &t);
    // The known difference: in ip_fragmented_garbage.pcap nDPI makes a port-0 flow of
    // fragments whose first fragment never came; normwatch counts those as orphans.
    assert!(pct >= 99.5, "{pct:.1}%");
}

#[test]
fn packets_per_direction_agree_with_suricata() {
    let expects = suricata_expectations();
    assert!(
        expects.len() > 20,
        "{} Suricata flow events parsed",
        expects.len()
    );
    let t = check(&expects);
    let pct = report("Suricata", &t);
    assert!(pct >= 98.0, "{pct:.1}%");
}
