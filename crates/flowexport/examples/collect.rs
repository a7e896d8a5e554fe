//! A bare flow-export collector for benchmarks: listens on one UDP address, decodes
//! everything it receives, and once datagrams stop coming for the idle time prints one line
//! with the datagrams, records and drops, and the CPU time this process used.
//!
//! `cargo run --release -p normwatch-flowexport --example collect -- 127.0.0.1:9995 [idle_s]`

#![allow(clippy::print_stdout)]

use normwatch_flowexport::listen::{ListenConfig, Listener};
use normwatch_flowexport::{Decoder, DecoderConfig};
use std::time::{Duration, Instant};

/// User plus system CPU time of this process in clock ticks (`/proc/self/stat`).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    get(11) + get(12)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9995".into())
        .parse()
        .expect("an address:port");
    let idle = Duration::from_secs_f64(args.next().map_or(3.0, |s| s.parse().expect("seconds")));
    let l = Listener::start(&ListenConfig {
        addrs: vec![addr],
        ..ListenConfig::default()
    })
    .expect("bind");
    println!("listening {}", l.local_addrs()[0]);
    let mut d = Decoder::new(DecoderConfig::default());
    let mut out = Vec::with_capacity(1024);
    let (mut datagrams, mut records) = (0u64, 0u64);
    let mut last = None::<Instant>;
    loop {
        match l.next_batch(Duration::from_millis(100)) {
            Some(b) => {
                for (from, at, data) in b.datagrams() {
                    let _ = d.decode(from, data, at, &mut out);
                    datagrams += 1;
                    records += out.len() as u64;
                    out.clear();
                }
                l.recycle(b);
                last = Some(Instant::now());
            }
            None if last.is_some_and(|t| t.elapsed() >= idle) => break,
            None => {}
        }
    }
    d.flush(&mut out);
    records += out.len() as u64;
    println!(
        "datagrams={datagrams} records={records} dropped={} channel_dropped={} cpu_ticks={}",
        d.stats().drops.iter().sum::<u64>(),
        l.stats()
            .channel_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        cpu_ticks()
    );
}
