//! `normwatch`: watches the networks of critical infrastructure for attacks that impair public
//! services. This binary only parses arguments, loads configuration and calls the library
//! crates; exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration.

#![allow(clippy::print_stdout, clippy::print_stderr)]

/// Prints a line to standard output. A reader that went away (a closed pipe, `| head`) is not
/// an error and never a panic: the command finishes its work and its exit code says how that
/// went.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                tracing::warn!(error = %e, "cannot write to standard output");
            }
        }
    }};
}

mod args;
mod demo;
mod evidence;
mod flows;
mod output;
mod requests;
mod simulate;
mod stages;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Watches critical-infrastructure networks and reports attacks that impair public services.
///
/// Start with `normwatch demo` to see every stage work on simulated attacks, `normwatch flows
/// --pcap FILE` to see the connections a capture holds, and `normwatch check-config FILE` to
/// validate a configuration before deploying it.
///
/// Stages: `normwatch run` runs everything in one process (no broker needed); across many
/// sites, `normwatch sensor` at each site publishes flow records to Kafka, `normwatch detect`
/// processes consume them as one consumer group and publish alerts, and `normwatch package`
/// turns closed alerts into signed evidence packages for the States the attacks come from.
#[derive(Debug, Parser)]
#[command(
    name = "normwatch",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// Log more (-v: debug, -vv: trace). Logs go to stderr; RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log lines as readable text or as JSON objects (one per line). Overrides
    /// telemetry.log_format of the configuration.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormatArg {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// See the whole system work on simulated traffic, with nothing but this binary.
    ///
    /// Writes a working directory (configuration, attribution databases, recipients, a
    /// signing key and a simulated capture: a SYN flood, a DNS amplification, an unauthorised
    /// Modbus write and an S7 PLC STOP against protected public services), runs every stage
    /// in one process while serving metrics, prints alerts as they open and close, writes a
    /// signed evidence package per recipient State, and ends with a summary.
    Demo(demo::DemoArgs),
    /// Turn packets into flow records and print them.
    ///
    /// Reads capture files (pcap or pcapng, any mix of link types) or captures live from an
    /// interface, tracks every connection bidirectionally with Zeek's originator and
    /// connection-state rules, and prints one record per connection when it ends.
    Flows(flows::FlowsArgs),
    /// Capture at a site and publish flow records to Kafka.
    ///
    /// Packets become flow records as in `flows`; records are batched per protected asset
    /// (or per responder address) and published on the flows topic by an idempotent
    /// producer. While no broker is reachable, batches go to the on-disk spool (spool.path) and
    /// are replayed in order when one returns; nothing accepted is lost. Needs
    /// bus.kind = "kafka".
    Sensor(stages::SensorArgs),
    /// Consume flow records from Kafka as a member of the detectors' consumer group.
    ///
    /// Each batch is verified (checksum, schema version), de-duplicated (a redelivered batch
    /// is dropped) and handed on; its offset is committed only after that. Corrupt batches
    /// are counted by reason and skipped. Needs bus.kind = "kafka".
    Detect(stages::DetectArgs),
    /// Package closed alerts from Kafka as signed evidence for their recipient States.
    ///
    /// Consumes the alerts topic (and the flows topic, for the flows behind each alert) in
    /// its own consumer group; for every closed alert, attributes the sources, plans one
    /// package per recipient State, builds and signs it, stores it with a durable outbox and
    /// delivers it (TAXII 2.1, webhook or directory drop, retried with backoff). Needs
    /// bus.kind = "kafka" and an `[evidence]` section.
    Package(stages::PackageArgs),
    /// Run every stage in one process over the in-process bus (no broker).
    ///
    /// The sensor and the consumer run on their own threads, joined by a bounded queue; a
    /// slow consumer slows the sensor instead of losing records.
    Run(stages::RunArgs),
    /// Validate a configuration file (or the norm catalogue) and report every problem in it
    /// at once.
    CheckConfig {
        /// The TOML configuration file.
        file: PathBuf,
    },
    /// Write realistic traffic for a named attack scenario as a pcap file.
    ///
    /// Benign background towards a few protected assets (web clients, a SCADA master polling
    /// its PLC) plus the attack: a SYN flood, a DNS amplification, an unauthorised Modbus
    /// write, an S7 PLC STOP, or all of them. The assets are those of config/demo.toml; the
    /// same scenario gives the same bytes every time.
    Simulate(simulate::SimulateArgs),
    /// Create an Ed25519 key pair for signing evidence packages.
    Keygen(evidence::KeygenArgs),
    /// List the requests for assistance sent and their outcomes, per State and per package.
    ///
    /// From the evidence store's ledger: for each request, whether the activity from the
    /// hosts it named stopped (in the traffic's time), when and how long after the request,
    /// whether before the deadline, how many hosts stopped, whether it resumed, the
    /// follow-ups sent and the replies received; per recipient State, the figures an
    /// authority reports (requests, followed up, stopped before the deadline, median time to
    /// stop). `--json` gives the same as one JSON object.
    Requests(requests::RequestsArgs),
    /// Check an evidence package (directory or .tar): signature, every file's hash, no missing
    /// or extra file, the custody chain. Exits 1 naming the first fault.
    Verify(evidence::VerifyArgs),
}

/// Errors that mean "you asked for something invalid" (exit 2), as opposed to a failure while
/// doing valid work (exit 1).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn init_logging(verbose: u8, format: normwatch_telemetry::LogFormat) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    normwatch_telemetry::init_logging(default, format);
}

/// The configuration file a command names, if any (read before logging starts, for its
/// telemetry.log_format).
fn config_path(c: &Command) -> Option<&std::path::Path> {
    match c {
        Command::Sensor(a) => Some(a.config_path()),
        Command::Detect(a) => Some(a.config_path()),
        Command::Package(a) => Some(a.config_path()),
        Command::Run(a) => a.config_path(),
        _ => None,
    }
}

fn log_format(cli: &Cli) -> normwatch_telemetry::LogFormat {
    use normwatch_telemetry::LogFormat;
    match cli.log_format {
        Some(LogFormatArg::Human) => LogFormat::Human,
        Some(LogFormatArg::Json) => LogFormat::Json,
        // A broken file is reported later with every problem in it; here it only means
        // the default format.
        None => match config_path(&cli.command).and_then(|p| normwatch_config::load(p).ok()) {
            Some(c) if c.telemetry.log_format == normwatch_config::LogFormat::Json => {
                LogFormat::Json
            }
            _ => LogFormat::Human,
        },
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, log_format(&cli));
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Flows(args) => flows::run(args),
        Command::Sensor(args) => stages::sensor(args),
        Command::Detect(args) => stages::detect(args),
        Command::Package(args) => stages::package(args),
        Command::Run(args) => stages::run(args),
        Command::CheckConfig { file } => check_config(&file),
        Command::Simulate(args) => simulate::run(args),
        Command::Keygen(args) => evidence::keygen(args),
        Command::Verify(args) => evidence::verify(args),
        Command::Requests(args) => requests::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Bad arguments and bad configuration (including an unreadable config file) are
            // usage errors; anything that fails while doing valid work is a runtime failure.
            if e.downcast_ref::<UsageError>().is_some()
                || e.downcast_ref::<normwatch_config::ConfigError>().is_some()
                || e.downcast_ref::<normwatch_pipeline::capture::InputError>()
                    .is_some()
                || e.downcast_ref::<normwatch_pipeline::evidence::EvidenceSettingsError>()
                    .is_some()
                // librdkafka refused a setting of the configuration.
                || e.chain().any(|c| {
                    matches!(
                        c.downcast_ref::<normwatch_transport::kafka::KafkaSetupError>(),
                        Some(normwatch_transport::kafka::KafkaSetupError::Refused(_))
                    )
                })
            {
                eprintln!("normwatch: {e}");
                ExitCode::from(2)
            } else {
                eprintln!("normwatch: {e:#}");
                ExitCode::from(1)
            }
        }
    }
}

/// Whether `path` can be read by group or others (a secret there is not secret).
#[cfg(unix)]
fn shared_mode(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn shared_mode(_: &std::path::Path) -> Option<u32> {
    None
}

/// What the files the configuration names would make fail at run time: TLS files and
/// secret files (missing, or a private one others can read) and `[evidence]` (its own
/// validation, the signing key with its mode, the recipient directory, the attribution
/// databases), each as `key: problem`.
fn check_files(cfg: &normwatch_config::Config) -> anyhow::Result<Vec<String>> {
    use std::path::Path;
    let mut problems = Vec::new();
    let exists = |problems: &mut Vec<String>, key: &str, path: &Path, secret: bool| {
        if !path.is_file() {
            problems.push(format!("{key}: {}: no such file", path.display()));
        } else if let Some(mode) = secret.then(|| shared_mode(path)).flatten() {
            problems.push(format!(
                "{key}: {}: readable by group or others (mode {mode:04o}); run chmod 600",
                path.display()
            ));
        }
    };
    if let Some(tls) = &cfg.kafka.tls {
        if let Some(p) = &tls.ca {
            exists(&mut problems, "kafka.tls.ca", p, false);
        }
        if let Some(p) = &tls.cert {
            exists(&mut problems, "kafka.tls.cert", p, false);
        }
        if let Some(p) = &tls.key {
            exists(&mut problems, "kafka.tls.key", p, true);
        }
        if let Some(p) = &tls.key_password_file {
            exists(&mut problems, "kafka.tls.key_password_file", p, true);
        }
    }
    if let Some(sasl) = &cfg.kafka.sasl {
        if let normwatch_config::Secret::File(p) = &sasl.password {
            exists(&mut problems, "kafka.sasl.password_file", p, true);
        }
    }
    let ev = match normwatch_pipeline::evidence::evidence_config(cfg) {
        Ok(Some(ev)) => ev,
        Ok(None) => return Ok(problems),
        Err(e) => {
            problems.push(format!("{e:#}"));
            return Ok(problems);
        }
    };
    if let Err(e) = normwatch_evidence::keys::SecretKey::load(&ev.signing_key) {
        problems.push(format!("evidence.signing_key: {e}"));
    }
    if let Err(e) = normwatch_evidence::recipients::Directory::load(&ev.recipients) {
        problems.push(format!("evidence.recipients: {e}"));
    }
    let geo = &ev.geoip;
    for (key, path) in [
        ("evidence.geoip.country", Some(&geo.country)),
        ("evidence.geoip.asn", geo.asn.as_ref()),
        ("evidence.geoip.anonymous_ip", geo.anonymous_ip.as_ref()),
    ] {
        if let Some(p) = path {
            exists(&mut problems, key, p, false);
        }
    }
    Ok(problems)
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    // A norm catalogue (config/norms.toml) is recognised by its [[norm]] entries.
    let is_catalogue = std::fs::read_to_string(file)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .is_some_and(|t| t.contains_key("norm"));
    if is_catalogue {
        let c = normwatch_config::norms::load_norms(file)?;
        outln!(
            "{}: ok (norm catalogue, {} norms)",
            file.display(),
            c.norms().len()
        );
        return Ok(());
    }
    let cfg = normwatch_config::load(file)?;
    normwatch_transport::kafka::check_client_options(&cfg.bus, &cfg.kafka)
        .map_err(|e| UsageError(format!("{}: {e}", file.display())))?;
    let problems = check_files(&cfg)?;
    if !problems.is_empty() {
        // Problems from the evidence settings already name the file.
        let origin = format!("{}: ", file.display());
        let list: Vec<String> = problems
            .iter()
            .map(|p| {
                if p.starts_with(&origin) {
                    p.clone()
                } else {
                    format!("{origin}{p}")
                }
            })
            .collect();
        return Err(UsageError(list.join("\n")).into());
    }
    outln!(
        "{}: ok ({} assets, sensor id {:?})",
        file.display(),
        cfg.assets.assets().len(),
        &*cfg.sensor.id
    );
    Ok(())
}
