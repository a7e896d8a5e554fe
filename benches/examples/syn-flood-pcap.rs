//! Writes a random-source SYN flood as a classic pcap: `syn-flood-pcap OUT [PACKETS] [PPS]`
//! (10 000 000 packets at 1 000 000 a second by default; every packet a new forged source,
//! all to 198.51.100.10:443; the same file every time).

#![allow(clippy::print_stderr)]

use normwatch_benches::SynFlood;
use std::io::BufWriter;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(out) = args.next() else {
        eprintln!("usage: syn-flood-pcap OUT [PACKETS] [PPS]");
        std::process::exit(2);
    };
    let num = |a: Option<String>, d: u64| a.map_or(Ok(d), |s| s.parse::<u64>());
    let (Ok(packets), Ok(pps)) = (num(args.next(), 10_000_000), num(args.next(), 1_000_000)) else {
        eprintln!("syn-flood-pcap: PACKETS and PPS are whole numbers");
        std::process::exit(2);
    };
    let flood = SynFlood::new(packets, pps);
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&out)?);
    flood.write_pcap(&mut w)
}
