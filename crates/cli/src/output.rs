//! Flow record output formats: Zeek-style TSV and JSON lines.

use normwatch_model::FlowRecord;
use std::io::{self, Write};

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
