//! `normwatch requests`: the requests for assistance in the evidence store and their outcomes
//! (did the activity stop, when, before the deadline, from how many hosts it continues, the
//! follow-ups sent and the replies received), per recipient State and per package.

use crate::UsageError;
use normwatch_evidence::canon::rfc3339_s;
use normwatch_evidence::followup::{figures, span_text, StateFigures};
use normwatch_evidence::store::{RequestRecord, Store};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct RequestsArgs {
    /// The evidence store (evidence.out_dir, or the demo's `<dir>/evidence`).
    #[arg(long, value_name = "DIR", required_unless_present = "config")]
    store: Option<PathBuf>,
    /// Take the store from this configuration's evidence.out_dir.
    #[arg(long, short = 'c', value_name = "FILE", conflicts_with = "store")]
    config: Option<PathBuf>,
    /// One JSON object (`states`, `requests`) instead of tables.
    #[arg(long)]
    json: bool,
}

fn dir(args: &RequestsArgs) -> anyhow::Result<PathBuf> {
    if let Some(s) = &args.store {
        return Ok(s.clone());
    }
    let path = args.config.clone().unwrap_or_default();
    let cfg = normwatch_config::load(&path)?;
    match normwatch_pipeline::evidence::evidence_config(&cfg)? {
        Some(ev) => Ok(ev.out_dir),
        None => Err(UsageError(format!(
            "{}: no [evidence] section, so no evidence store",
            path.display()
        ))
        .into()),
    }
}

fn request_json(r: &RequestRecord) -> serde_json::Value {
    let w = &r.watch;
    json!({
        "package_id": w.package_id,
        "alert_id": w.alert_id,
        "campaign": w.campaign,
        "services": w.services,
        "updates": w.updates,
        "state": w.recipient,
        "about_state": w.about_state,
        "requested": rfc3339_s(w.requested_ns),
        "deadline": rfc3339_s(w.deadline_ns),
        "sent": r.sent_ns.map(rfc3339_s),
        "status": w.status(),
        "stopped": w.stopped_ns.map(rfc3339_s),
        "seconds_to_stop": w.time_to_stop_ns().map(|t| t / 1_000_000_000),
        "stopped_before_deadline": w.stopped_ns.map(|t| t <= w.deadline_ns),
        "hosts": w.sources.len(),
        "hosts_stopped": w.stopped_hosts(),
        "active_at_deadline": w.active_at_deadline,
        "resumed": w.resumed_ns.map(rfc3339_s),
        "observed_until": rfc3339_s(w.observed_ns),
        "follow_ups": r.follow_ups.iter().map(|f| json!({
            "id": f.id,
            "kind": f.kind,
            "at": rfc3339_s(f.at_ns),
            "status": f.status,
            "active_hosts": f.active_sources,
            "hosts": f.total_sources,
            "delivered": f.delivered,
        })).collect::<Vec<_>>(),
        "replies": r.replies.iter().map(|x| json!({
            "package_id": x.package_id,
            "received": rfc3339_s(x.received_ns),
            "verified": x.verified,
            "text": x.text,
            "file": x.file,
            "channel": x.channel_idx,
        })).collect::<Vec<_>>(),
    })
}

fn state_table(states: &[StateFigures]) -> String {
    let mut out = format!(
        "{:<6} {:>8} {:>11} {:>8} {:>16} {:>10} {:>8} {:>20} {:>8}\n",
        "STATE",
        "REQUESTS",
        "FOLLOWED-UP",
        "STOPPED",
        "BEFORE-DEADLINE",
        "CONTINUES",
        "RESUMED",
        "MEDIAN-TIME-TO-STOP",
        "REPLIES"
    );
    for f in states {
        out.push_str(&format!(
            "{:<6} {:>8} {:>11} {:>8} {:>16} {:>10} {:>8} {:>20} {:>8}\n",
            f.state,
            f.requests,
            f.followed_up,
            f.stopped,
            f.stopped_before_deadline,
            f.continuing,
            f.resumed,
            f.median_seconds_to_stop
                .map_or_else(|| "-".into(), |s| span_text((s * 1e9) as u64)),
            f.replies
        ));
    }
    out
}

/// `stopped+deadline`; a follow-up not yet delivered carries a `?`.
fn follow_ups(r: &RequestRecord) -> String {
    if r.follow_ups.is_empty() {
        return "-".into();
    }
    r.follow_ups
        .iter()
        .map(|f| format!("{}{}", f.kind.as_str(), if f.delivered { "" } else { "?" }))
        .collect::<Vec<_>>()
        .join("+")
}

fn request_table(requests: &[RequestRecord]) -> String {
    let mut out = format!(
        "{:<34} {:<5} {:<20} {:<10} {:<20} {:>12} {:>9} {:>6} {:<18} {:>7}\n",
        "PACKAGE",
        "STATE",
        "REQUESTED",
        "STATUS",
        "STOPPED",
        "AFTER",
        "DEADLINE",
        "HOSTS",
        "FOLLOW-UPS",
        "REPLIES"
    );
    for r in requests {
        let w = &r.watch;
        out.push_str(&format!(
            "{:<34} {:<5} {:<20} {:<10} {:<20} {:>12} {:>9} {:>6} {:<18} {:>7}\n",
            w.package_id,
            w.recipient,
            rfc3339_s(w.requested_ns),
            w.status(),
            w.stopped_ns.map_or_else(|| "-".into(), rfc3339_s),
            w.time_to_stop_ns().map_or_else(|| "-".into(), span_text),
            match w.stopped_ns {
                Some(t) if t <= w.deadline_ns => "met",
                Some(_) => "missed",
                None if w.active_at_deadline.is_some() => "missed",
                None => "pending",
            },
            format!("{}/{}", w.stopped_hosts(), w.sources.len()),
            follow_ups(r),
            r.replies.len()
        ));
    }
    // What each campaign request names (one request for several services).
    for r in requests.iter().filter(|r| r.watch.services.len() > 1) {
        let w = &r.watch;
        out.push_str(&format!(
            "\n{} (campaign {}, {} update{}): {}",
            w.package_id,
            w.campaign.as_deref().unwrap_or("-"),
            w.updates.len(),
            if w.updates.len() == 1 { "" } else { "s" },
            w.services.join("; ")
        ));
    }
    if requests.iter().any(|r| r.watch.services.len() > 1) {
        out.push('\n');
    }
    out
}

pub fn run(args: RequestsArgs) -> anyhow::Result<()> {
    let dir = dir(&args)?;
    if !dir.join("ledger.sqlite3").is_file() {
        return Err(UsageError(format!(
            "{}: no evidence store here (no ledger.sqlite3)",
            dir.display()
        ))
        .into());
    }
    let store = Store::open(&dir)?;
    let requests = store.requests()?;
    let states = figures(&requests);
    let text = if args.json {
        let mut t = serde_json::to_string_pretty(&json!({
            "states": states,
            "requests": requests.iter().map(request_json).collect::<Vec<_>>(),
        }))?;
        t.push('\n');
        t
    } else if requests.is_empty() {
        format!("no requests for assistance in {}\n", dir.display())
    } else {
        format!(
            "requests for assistance in {} (times are the traffic's, UTC; HOSTS: stopped/listed)\n\n{}\n{}",
            dir.display(),
            state_table(&states),
            request_table(&requests)
        )
    };
    // A reader that stops early (`| head`) is not an error.
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
