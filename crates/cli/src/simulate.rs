//! `normwatch simulate`: writes a named scenario's traffic as a pcap file.

use crate::UsageError;
use anyhow::Context;
use normwatch_simulate::{write_scenario, SimulateError, SCENARIOS};
use std::io::BufWriter;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The scenario: syn-flood, dns-amplification, modbus-write, s7-stop, all, or
    /// s7-stop-held. Each adds its attack to two minutes of benign background traffic;
    /// `--list` describes them.
    #[arg(long, short = 's', value_name = "NAME", default_value = "all")]
    scenario: String,
    /// The pcap file to write.
    #[arg(
        long,
        short = 'o',
        value_name = "FILE.pcap",
        required_unless_present = "list"
    )]
    out: Option<PathBuf>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    if args.list {
        for (name, what) in SCENARIOS {
            outln!("{name:<18} {what}");
        }
        return Ok(());
    }
    let Some(out) = args.out else {
        return Err(UsageError("--out FILE.pcap is required".into()).into());
    };
    let file = std::fs::File::create(&out)
        .map_err(|e| UsageError(format!("cannot create {}: {e}", out.display())))?;
    let written = match write_scenario(&args.scenario, BufWriter::new(file)) {
        Ok(w) => w,
        Err(e @ SimulateError::Unknown(_)) => {
            let _ = std::fs::remove_file(&out);
            return Err(UsageError(e.to_string()).into());
        }
        Err(e) => return Err(e).with_context(|| format!("writing {}", out.display())),
    };
    outln!(
        "{}: scenario {}, {} packets, {} bytes, {:.0} s of traffic",
        out.display(),
        args.scenario,
        written.packets,
        written.bytes,
        (written.last_ns - written.first_ns) as f64 / 1e9
    );
    Ok(())
}
