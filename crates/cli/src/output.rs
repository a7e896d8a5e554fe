//! Flow record output formats: Zeek-style TSV and JSON lines.

use anyhow::Context;
use normwatch_model::{Alert, FlowRecord};
use normwatch_pipeline::alerts::AlertSink;
use normwatch_pipeline::detect::FlowSink;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// How flows are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tab-separated values with a Zeek `#fields` header, using Zeek's conn.log names.
    Zeek,
    /// One JSON object per line: the full flow record.
    Json,
}

/// The Zeek TSV header line.
pub const ZEEK_FIELDS: &str = "#fields\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tconn_state\torig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes";

/// Writes flow records in one format.
pub struct FlowWriter<W: Write> {
    out: W,
    format: Format,
}

impl<W: Write> FlowWriter<W> {
    pub fn new(mut out: W, format: Format) -> io::Result<Self> {
        if format == Format::Zeek {
            writeln!(out, "{ZEEK_FIELDS}")?;
        }
        Ok(FlowWriter { out, format })
    }

    pub fn write(&mut self, r: &FlowRecord) -> io::Result<()> {
        match self.format {
            Format::Zeek => writeln!(
                self.out,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                r.orig_addr,
                r.orig_port,
                r.resp_addr,
                r.resp_port,
                r.zeek_proto(),
                r.conn_state,
                r.orig.pkts,
                r.orig.ip_bytes,
                r.resp.pkts,
                r.resp.ip_bytes
            ),
            Format::Json => {
                serde_json::to_writer(&mut self.out, r).map_err(io::Error::other)?;
                self.out.write_all(b"\n")
            }
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A [`FlowSink`] writing records in one format. A closed pipe (the reader went away) ends
/// output quietly; any other write error fails the run.
pub struct WriterSink {
    writer: FlowWriter<Box<dyn Write>>,
    /// Set once the reader has gone; later records are discarded.
    closed: bool,
}

impl WriterSink {
    /// Writes to `path`, or standard output when `None`.
    pub fn create(path: Option<&Path>, format: Format) -> anyhow::Result<Self> {
        let out: Box<dyn Write> = match path {
            Some(p) => Box::new(BufWriter::new(File::create(p).map_err(|e| {
                crate::UsageError(format!("cannot create {}: {e}", p.display()))
            })?)),
            None => Box::new(BufWriter::new(io::stdout().lock())),
        };
        Ok(WriterSink {
            writer: FlowWriter::new(out, format).context("cannot write flows")?,
            closed: false,
        })
    }

    fn check(&mut self, r: io::Result<()>) -> anyhow::Result<()> {
        match r {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other.context("cannot write flows"),
        }
    }
}

impl FlowSink for WriterSink {
    fn accept(&mut self, records: &[FlowRecord]) -> anyhow::Result<()> {
        for r in records {
            if self.closed {
                return Ok(());
            }
            let written = self.writer.write(r);
            self.check(written)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.closed {
            return Ok(());
        }
        let flushed = self.writer.flush();
        self.check(flushed)
    }
}

/// Writes alert events as JSON lines.
pub struct JsonAlerts {
    out: Box<dyn Write>,
}

impl JsonAlerts {
    /// Writes to `path`, or standard output for `-`.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let out: Box<dyn Write> = if path.as_os_str() == "-" {
            Box::new(BufWriter::new(io::stdout().lock()))
        } else {
            Box::new(BufWriter::new(File::create(path).map_err(|e| {
                crate::UsageError(format!("cannot create {}: {e}", path.display()))
            })?))
        };
        Ok(JsonAlerts { out })
    }
}

impl AlertSink for JsonAlerts {
    fn alert(&mut self, a: &Alert) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, a).context("cannot write alerts")?;
        self.out.write_all(b"\n").context("cannot write alerts")
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush().context("cannot write alerts")
    }
}
