//! `normwatch flows`: packets to flow records, printed.

use crate::args::{config, stop_flags, InputArgs};
use crate::output::{Format, WriterSink};
use normwatch_pipeline::topology::{flows, SensorOptions};
use normwatch_sensor::decode::DropReason;
use normwatch_sensor::SensorStats;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct FlowsArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Configuration file (sensor settings and protected assets). Defaults apply without it.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output format: `zeek` (TSV with Zeek conn.log column names) or `json` (full records).
    #[arg(long, value_enum, default_value_t = Format::Zeek)]
    format: Format,
    /// Write flows to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print packet, drop and flow counters to standard error at the end.
    #[arg(long)]
    stats: bool,
}

pub fn run(args: FlowsArgs) -> anyhow::Result<()> {
    let cfg = config(args.config.as_deref())?;
    let mut sink = WriterSink::create(args.output.as_deref(), args.format)?;
    let flags = stop_flags()?;
    let opts = SensorOptions {
        source: args.input.source(None),
        checksums: args.input.checksums(),
        force: flags.force.clone(),
        ..SensorOptions::default()
    };
    let (stats, result) = flows(&cfg, &args.input.input(), &opts, &mut sink, &flags.stop);
    if args.stats {
        print_stats(&stats);
    }
    result
}

#[allow(clippy::print_stderr)]
pub fn print_stats(s: &SensorStats) {
    eprintln!("packets\t{}", s.packets);
    eprintln!("bytes\t{}", s.bytes);
    eprintln!("flows_created\t{}", s.flows_created);
    eprintln!("flows_evicted\t{}", s.evictions());
    eprintln!("fragments\t{}", s.fragments);
    eprintln!("fragments_orphaned\t{}", s.fragments_orphaned);
    eprintln!("ics_malformed\t{}", s.ics_malformed);
    for r in DropReason::ALL {
        let n = s.drops_for(r);
        if n > 0 {
            eprintln!("drop.{}\t{}", r.as_str(), n);
        }
    }
}
