//! Flow records against every full Zeek conn.log baseline (section A of
//! `ZEEK_CONN_BASELINES.md`): at least 99% of the baseline connections found by 5-tuple with
//! identical packets and IP bytes both ways, and `conn_state` equal on at least 95%.
//! Each run's recorded flags are honoured: `-C` turns checksum verification off, and
//! `ignore_checksums_nets` becomes the sensor's `ignore_checksum_nets`.

#![allow(clippy::print_stdout)]

use normwatch_model::FlowRecord;
use normwatch_tests::{capture, config, flows_of};
use std::collections::HashMap;
use std::path::Path;

struct Run {
    baseline: String,
    trace: String,
    command: String,
}

/// The rows of section A.
fn runs() -> Vec<Run> {
    let md = std::fs::read_to_string(capture("ZEEK_CONN_BASELINES.md"))
        .expect("ZEEK_CONN_BASELINES.md in the shared data");
    let mut in_a = false;
    let mut runs = Vec::new();
    for line in md.lines() {
        if line.starts_with("## ") {
            in_a = line.starts_with("## A. ");
            continue;
        }
        if !in_a || !line.starts_with("| zeek/") && !line.starts_with("| icsnpp") {
            continue;
        }
        let cols: Vec<&str> = line
            .split(" | ")
            .map(|c| c.trim_matches(['|', ' ']))
            .collect();
        runs.push(Run {
            baseline: cols[0].to_string(),
            trace: cols[1].to_string(),
            command: cols[3].trim_matches('`').to_string(),
        });
    }
    runs
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    key: (String, u16, String, u16, String),
    conn_state: String,
    counts: [u64; 4],
}

fn parse_conn_log(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut fields: Vec<&str> = Vec::new();
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("#fields\t") {
            fields = f.split('\t').collect();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let vals: Vec<&str> = line.split('\t').collect();
        let get = |name: &str| -> &str {
            let i = fields
                .iter()
                .position(|f| *f == name)
                .unwrap_or_else(|| panic!("{name} in {}", path.display()));
            vals[i]
        };
        let num = |name: &str| get(name).parse::<u64>().unwrap_or(0);
        rows.push(Row {
            key: (
                get("id.orig_h").to_string(),
                get("id.orig_p").parse().unwrap(),
                get("id.resp_h").to_string(),
                get("id.resp_p").parse().unwrap(),
                get("proto").to_string(),
            ),
            conn_state: get("conn_state").to_string(),
            counts: [
                num("orig_pkts"),
                num("orig_ip_bytes"),
                num("resp_pkts"),
                num("resp_ip_bytes"),
            ],
        });
    }
    rows
}

fn to_row(r: &FlowRecord) -> Row {
    Row {
        key: (
            r.orig_addr.to_string(),
            r.orig_port,
            r.resp_addr.to_string(),
            r.resp_port,
            r.zeek_proto().to_string(),
        ),
        conn_state: r.conn_state.to_string(),
        counts: [r.orig.pkts, r.orig.ip_bytes, r.resp.pkts, r.resp.ip_bytes],
    }
}

/// Parses `ignore_checksums_nets += {a/b, c/d}` out of a Zeek command line.
fn ignore_nets(command: &str) -> Vec<(u128, u128)> {
    let Some(start) = command.find("ignore_checksums_nets += {") else {
        return Vec::new();
    };
    let rest = &command[start + "ignore_checksums_nets += {".len()..];
    let set = &rest[..rest.find('}').unwrap()];
    set.split(',')
        .map(|n| {
            let net: ipnet::Ipv4Net = n.trim().parse().unwrap();
            let bits = u128::from(net.network().to_ipv6_mapped());
            let len = u32::from(net.prefix_len()) + 96;
            let mask = u128::MAX << (128 - len);
            (bits & mask, mask)
        })
        .collect()
}

/// `zeek -b` loads only the scripts a test names, so only their ports are likely server
/// ports (each protocol script adds its own to `likely_server_ports`). The btest name says
/// which protocol script a bare test loads.
fn bare_mode_server_ports(baseline: &str) -> Vec<u16> {
    let scripts: &[(&str, &[u16])] = &[
        ("protocols.dhcp", &[67]),
        ("protocols.ftp", &[21, 2811]),
        ("protocols.modbus", &[502]),
        ("protocols.ntp", &[123]),
        ("protocols.ssh", &[22]),
    ];
    scripts
        .iter()
        .filter(|(name, _)| baseline.contains(name))
        .flat_map(|(_, ports)| ports.iter().copied())
        .collect()
}

#[test]
fn flows_match_zeek_conn_logs() {
    let runs = runs();
    assert!(runs.len() >= 30, "section A has {} runs", runs.len());
    let (mut total, mut found, mut state_ok) = (0usize, 0usize, 0usize);
    println!(
        "{:<72} {:>5} {:>6} {:>6}",
        "baseline", "rows", "counts", "state"
    );
    let mut misses = Vec::new();
    for run in &runs {
        let mut cfg = config(!run.command.contains(" -C "));
        if run.command.contains(" -b ") {
            cfg.likely_server_ports = bare_mode_server_ports(&run.baseline);
        }
        cfg.checksums.ignore_src = ignore_nets(&run.command);
        let trace = capture(&run.trace);
        let (flows, _) = flows_of(&trace, cfg).unwrap_or_else(|(_, e)| panic!("{e}"));
        let want = parse_conn_log(&capture(&run.baseline));
        let mut ours: HashMap<_, Vec<Row>> = HashMap::new();
        for f in &flows {
            let r = to_row(f);
            ours.entry(r.key.clone()).or_default().push(r);
        }
        let (mut f_run, mut s_run) = (0, 0);
        for w in &want {
            let cands = ours.entry(w.key.clone()).or_default();
            let exact = cands.iter().position(|c| c.counts == w.counts);
            let pick = exact.or(if cands.is_empty() { None } else { Some(0) });
            match pick {
                Some(i) => {
                    let c = cands.remove(i);
                    if exact.is_some() {
                        f_run += 1;
                    } else {
                        misses.push(format!(
                            "{}: {:?} want {:?} {} got {:?} {}",
                            run.trace, w.key, w.counts, w.conn_state, c.counts, c.conn_state
                        ));
                    }
                    if c.conn_state == w.conn_state {
                        s_run += 1;
                    } else if exact.is_some() {
                        misses.push(format!(
                            "{}: {:?} state want {} got {}",
                            run.trace, w.key, w.conn_state, c.conn_state
                        ));
                    }
                }
                None => misses.push(format!(
                    "{}: {:?} {:?} {} not found",
                    run.trace, w.key, w.counts, w.conn_state
                )),
            }
        }
        let name = run
            .baseline
            .trim_start_matches("zeek/testing/btest/Baseline/");
        println!("{:<72} {:>5} {:>6} {:>6}", name, want.len(), f_run, s_run);
        total += want.len();
        found += f_run;
        state_ok += s_run;
    }
    for m in misses.iter().take(60) {
        println!("  {m}");
    }
    let counts_pct = 100.0 * found as f64 / total as f64;
    let state_pct = 100.0 * state_ok as f64 / total as f64;
    println!("total {total} baseline connections: counts identical {found} ({counts_pct:.2}%), conn_state equal {state_ok} ({state_pct:.2}%)");
    assert!(
        counts_pct >= 99.0,
        "only {counts_pct:.2}% of baseline connections matched"
    );
    assert!(
        state_pct >= 95.0,
        "conn_state equal on only {state_pct:.2}%"
    );
}
