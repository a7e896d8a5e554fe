//! Flow record output formats: Zeek-style TSV and JSON lines.

use anyhow::Context;
use normwatch_model::{Alert, EndReason, FlowRecord};
use normwatch_pipeline::sinks::{AlertSink, FlowSink};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
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
    /// One Zeek line, built by hand: `write!` costs more than the flow table per record.
    line: Vec<u8>,
}

impl<W: Write> FlowWriter<W> {
    pub fn new(mut out: W, format: Format) -> io::Result<Self> {
        if format == Format::Zeek {
            writeln!(out, "{ZEEK_FIELDS}")?;
        }
        Ok(FlowWriter {
            out,
            format,
            line: Vec::with_capacity(160),
        })
    }

    /// Writes one record. In Zeek's format a line is a connection, so an interim report of a
    /// connection that goes on is left out (its final record follows with the totals).
    pub fn write(&mut self, r: &FlowRecord) -> io::Result<()> {
        match self.format {
            Format::Zeek if r.end_reason == EndReason::Interim => Ok(()),
            Format::Zeek => {
                let l = &mut self.line;
                l.clear();
                push_addr(l, r.orig_addr);
                l.push(b'\t');
                push_u64(l, u64::from(r.orig_port));
                l.push(b'\t');
                push_addr(l, r.resp_addr);
                l.push(b'\t');
                push_u64(l, u64::from(r.resp_port));
                l.push(b'\t');
                l.extend_from_slice(r.zeek_proto().as_bytes());
                l.push(b'\t');
                l.extend_from_slice(r.conn_state.as_str().as_bytes());
                for n in [r.orig.pkts, r.orig.ip_bytes, r.resp.pkts, r.resp.ip_bytes] {
                    l.push(b'\t');
                    push_u64(l, n);
                }
                l.push(b'\n');
                self.out.write_all(l)
            }
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

/// Decimal digits of `n`.
fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The address as `Display` writes it (dotted quad by hand; IPv6 is rare enough for `write!`).
fn push_addr(out: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(v4) => {
            for (i, b) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(b));
            }
        }
        IpAddr::V6(v6) => {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_addresses_print_as_display_does() {
        for n in [
            0,
            7,
            9,
            10,
            42,
            99,
            100,
            101,
            999,
            1000,
            65535,
            1 << 40,
            u64::MAX,
        ] {
            let mut v = Vec::new();
            push_u64(&mut v, n);
            assert_eq!(String::from_utf8(v).unwrap(), n.to_string());
        }
        for a in [
            "0.0.0.0",
            "10.0.0.1",
            "192.168.100.255",
            "::1",
            "2001:db8::ff00:42:8329",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            let mut v = Vec::new();
            push_addr(&mut v, ip);
            assert_eq!(String::from_utf8(v).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn zeek_lines_are_connections_and_json_keeps_interim_reports() {
        use normwatch_model::{ConnState, DirStats};
        let rec = |end_reason| FlowRecord {
            sensor_id: "s".into(),
            flow_id: 1,
            orig_addr: "192.0.2.1".parse().unwrap(),
            orig_port: 40000,
            resp_addr: "198.51.100.2".parse().unwrap(),
            resp_port: 80,
            ip_proto: 6,
            first_ns: 1,
            last_ns: 2,
            orig: DirStats::default(),
            resp: DirStats::default(),
            conn_state: ConnState::S1,
            asset: None,
            ics: None,
            end_reason,
            export: None,
            prior: None,
            attempts: None,
            orig_ttl: None,
            resp_ttl: None,
        };
        let records = [rec(EndReason::Interim), rec(EndReason::TcpClosed)];
        let lines = |format| {
            let mut w = FlowWriter::new(Vec::new(), format).unwrap();
            for r in &records {
                w.write(r).unwrap();
            }
            String::from_utf8(w.out).unwrap().lines().count()
        };
        assert_eq!(lines(Format::Zeek), 2, "the header and the one connection");
        assert_eq!(lines(Format::Json), 2, "both records");
    }
}
