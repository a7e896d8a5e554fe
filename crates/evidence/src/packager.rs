//! The packaging stage as one object: from the validated `[evidence]` settings it opens the
//! attribution databases, the POC directory, the signing key and the store, then turns alerts
//! into stored packages (one per recipient State) and runs the delivery passes. The pipeline
//! calls [`Packager::package`] with an alert's final event and [`Packager::deliver_due`] on a
//! timer; time is always the caller's.

use crate::attribution::{Attribution, GeoDb};
use crate::config::EvidenceConfig;
use crate::error::{Error, Result};
use crate::keys::SecretKey;
use crate::package::{self, BuildInput};
use crate::recipients::{self, Directory};
use crate::store::{PassReport, Store};
use normwatch_config::norms::NormCatalogue;
use normwatch_model::{Alert, FlowRecord};
use std::collections::BTreeMap;
use std::time::Duration;

/// One package built for an alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    pub id: String,
    /// The recipient's ISO code and name.
    pub recipient: String,
    pub recipient_name: String,
    /// The State the request is about (`None`: unknown registration).
    pub about_state: Option<String>,
    /// Sources named for the State, and for providers' abuse desks.
    pub sources: usize,
    pub provider_abuse: usize,
    /// Stored now (false: an earlier build of the same package was kept).
    pub new: bool,
}

/// What packaging one alert did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackageOutcome {
    /// Every package of the alert, in plan order.
    pub packages: Vec<Built>,
    /// Packages built and queued now.
    pub stored: Vec<String>,
    /// Packages of this alert stored before (the first build wins).
    pub already_stored: Vec<String>,
    /// Packages whose recipient has no channel: stored, but someone must carry them.
    pub undeliverable: Vec<String>,
    /// Sources in the requesting State's own territory, left out.
    pub own_state_sources: usize,
    /// Addresses whose lookup failed; they were packaged with no attribution (routed to the
    /// national authority), and the reason is kept here for the log.
    pub lookup_errors: Vec<String>,
}

/// The packaging and delivery stage.
#[derive(Debug)]
pub struct Packager {
    cfg: EvidenceConfig,
    geo: GeoDb,
    directory: Directory,
    key: SecretKey,
    store: Store,
    norms: NormCatalogue,
    timeout: Duration,
    /// The operator of each protected asset (`[[asset]] operator`), by asset id.
    asset_operators: BTreeMap<String, String>,
}

impl Packager {
    /// Opens everything the settings name; each failure names its file.
    pub fn open(cfg: EvidenceConfig, norms: NormCatalogue) -> Result<Packager> {
        let geo = GeoDb::open(&cfg.geoip)?;
        let mut directory = Directory::load(&cfg.recipients)?;
        if let Some(base) = cfg.recipients.parent() {
            directory.resolve_paths(base);
        }
        let missing = directory.unreadable_ca_files();
        if !missing.is_empty() {
            return Err(Error::Config(format!(
                "{}: {}",
                cfg.recipients.display(),
                missing.join("; ")
            )));
        }
        if directory.get(&cfg.own_state).is_none() {
            return Err(Error::Config(format!(
                "{}: no [[state]] entry for own_state {} (its national authority routes packages no other entry takes)",
                cfg.recipients.display(),
                cfg.own_state
            )));
        }
        let key = SecretKey::load(&cfg.signing_key)?;
        let store = Store::open(&cfg.out_dir)?;
        Ok(Packager {
            cfg,
            geo,
            directory,
            key,
            store,
            norms,
            timeout: Duration::from_secs(30),
            asset_operators: BTreeMap::new(),
        })
    }

    /// Names the operator of each asset (asset id → operator), so a package names the
    /// operator of the attacked asset, not only the organisation running this system.
    pub fn set_asset_operators(&mut self, operators: BTreeMap<String, String>) {
        self.asset_operators = operators;
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Builds, stores and queues the packages of `alert` (with the flows it was raised on).
    pub fn package(
        &mut self,
        alert: &Alert,
        flows: &[FlowRecord],
        now_ns: u64,
    ) -> Result<PackageOutcome> {
        self.package_recorded(alert, flows, None, now_ns)
    }

    /// [`Packager::package`], with the time the flows' first record arrived from the sensors
    /// (recorded by the caller on arrival) for the custody log.
    pub fn package_recorded(
        &mut self,
        alert: &Alert,
        flows: &[FlowRecord],
        flows_received_ns: Option<u64>,
        now_ns: u64,
    ) -> Result<PackageOutcome> {
        let mut out = PackageOutcome::default();
        let mut attributions: BTreeMap<_, Attribution> = BTreeMap::new();
        for s in &alert.top_sources {
            match self.geo.lookup(s.addr) {
                Ok(a) => {
                    attributions.insert(s.addr, a);
                }
                Err(e) => out.lookup_errors.push(e.to_string()),
            }
        }
        let tlp = self.cfg.request.tlp;
        // The detector's spoofing assessment names the forged sources (reflectors answer
        // forged requests from real addresses and stay out).
        let spoofed: Vec<std::net::IpAddr> =
            if alert.spoofing.as_ref().is_some_and(|s| s.likely_spoofed) {
                alert
                    .top_sources
                    .iter()
                    .filter(|s| !s.reflector)
                    .map(|s| s.addr)
                    .collect()
            } else {
                Vec::new()
            };
        let plan = recipients::plan(
            alert,
            &attributions,
            &spoofed,
            &self.directory,
            &self.cfg.own_state,
            tlp,
        )?;
        out.own_state_sources = plan.own_state_sources.len();
        let requester = self.directory.get(&self.cfg.own_state).ok_or_else(|| {
            Error::Config(format!("no entry for own_state {}", self.cfg.own_state))
        })?;
        let geo = self.geo.provenance();
        for p in &plan.packages {
            let pkg = package::build(
                BuildInput {
                    alert,
                    flows,
                    planned: p,
                    requester,
                    operator: &self.cfg.operator,
                    asset_operator: self
                        .asset_operators
                        .get(alert.asset.as_str())
                        .map(String::as_str),
                    settings: &self.cfg.request,
                    norms: &self.norms,
                    geo: &geo,
                    packaged_at_ns: now_ns,
                    flows_received_ns,
                },
                &self.key,
            )?;
            if p.recipient.channels.is_empty() {
                out.undeliverable.push(pkg.id.clone());
            }
            let new = self.store.put(&pkg, &p.recipient, now_ns)?;
            out.packages.push(Built {
                id: pkg.id.clone(),
                recipient: p.recipient.code.clone(),
                recipient_name: p.recipient.name.clone(),
                about_state: p.about_state.clone(),
                sources: p.sources.len(),
                provider_abuse: p.provider_abuse.len(),
                new,
            });
            if new {
                out.stored.push(pkg.id);
            } else {
                out.already_stored.push(pkg.id);
            }
        }
        Ok(out)
    }

    /// One delivery pass over the outbox.
    pub fn deliver_due(&mut self, now_ns: u64) -> Result<PassReport> {
        // The operator's own system delivers; the national authority is a recipient, not the
        // sender.
        let actor = format!("{} (normwatch packager)", self.cfg.operator.name);
        // A queued delivery goes over the recipient's channel as the directory defines it
        // now, so fixing a URL or adding a CA file reaches packages already waiting.
        let directory = &self.directory;
        self.store
            .deliver_due_with(now_ns, &self.key, &actor, self.timeout, |item| {
                directory
                    .get(&item.recipient)?
                    .channels
                    .get(item.channel_idx as usize)
                    .cloned()
            })
    }
}
