//! The packaging stage as one object: from the validated `[evidence]` settings it opens the
//! attribution databases, the POC directory, the signing key and the store, then turns alerts
//! into stored packages (one per recipient State) and runs the delivery passes. The pipeline
//! calls [`Packager::package`] with an alert's final event and [`Packager::deliver_due`] on a
//! timer; time is always the caller's.

use crate::attribution::{Attribution, GeoDb};
use crate::config::EvidenceConfig;
use crate::error::{Error, Result};
use crate::followup::{self, FollowUpKind, Watch};
use crate::keys::SecretKey;
use crate::package::{self, BuildInput};
use crate::recipients::{self, Directory};
use crate::store::{PassReport, Store};
use normwatch_config::norms::NormCatalogue;
use normwatch_model::{Alert, FlowRecord};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
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
    /// Requests registered for follow-up now: (package id, recipient code).
    pub requests: Vec<(String, String)>,
    /// The alert is held for its campaign's request (`[evidence.campaign] hold`): its
    /// packages are built when the hold ends (see [`Packager::release_held`]).
    pub held: bool,
}

/// A follow-up stored for delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowUpSent {
    pub id: String,
    pub kind: FollowUpKind,
    /// The request's state, when the follow-up was decided.
    pub watch: Watch,
    /// Listed hosts still active when it was decided.
    pub active: usize,
    /// Stored now (false: stored before a restart, only recorded now).
    pub new: bool,
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
    /// Delivered requests being followed up, by package id, and the ids by source address.
    watches: BTreeMap<String, Watch>,
    watched: HashMap<IpAddr, Vec<String>>,
    /// Watches with observations not yet saved to the ledger.
    unsaved: std::collections::BTreeSet<String>,
    /// Every alert's campaign, in the order recorded.
    campaigns: Vec<crate::campaign::Member>,
    /// Alerts held for their campaign's request, as the ledger keeps them.
    held: Vec<crate::campaign::Held>,
    /// Event time: the latest flow time observed.
    watermark_ns: u64,
    saved_at_ns: u64,
}

/// Whether a planned package is a request to a State (mitigation of listed sources), the
/// packages campaigns group and follow-ups watch.
fn is_request(p: &recipients::PlannedPackage) -> bool {
    p.purpose == recipients::Purpose::Mitigation && !p.sources.is_empty()
}

/// Traffic observations are saved to the ledger at most once per this much event time (a
/// decision, a follow-up, is saved at once).
const SAVE_EVERY_NS: u64 = 1_000_000_000;

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
        let mut p = Packager {
            cfg,
            geo,
            directory,
            key,
            store,
            norms,
            timeout: Duration::from_secs(30),
            asset_operators: BTreeMap::new(),
            watches: BTreeMap::new(),
            watched: HashMap::new(),
            unsaved: std::collections::BTreeSet::new(),
            watermark_ns: 0,
            saved_at_ns: 0,
            campaigns: Vec::new(),
            held: Vec::new(),
        };
        p.campaigns = p.store.campaign_members()?;
        // Alerts held when the packager stopped are released on the same terms.
        p.held = p.store.holds()?;
        // A restart continues the follow-ups where the ledger left them.
        for w in p.store.open_watches()? {
            p.watermark_ns = p.watermark_ns.max(w.observed_ns);
            p.watch(w);
        }
        Ok(p)
    }

    fn watch(&mut self, w: Watch) {
        for a in w.sources.keys() {
            self.watched
                .entry(*a)
                .or_default()
                .push(w.package_id.clone());
        }
        self.watches.insert(w.package_id.clone(), w);
    }

    /// Adds an update's sources to its request's follow-up (a closed one stays closed), and
    /// saves it at once.
    fn join_update(
        &mut self,
        request: &str,
        update: String,
        sources: BTreeMap<IpAddr, u64>,
        service: String,
    ) -> Result<()> {
        let Some(w) = self.watches.get_mut(request) else {
            return Ok(());
        };
        if w.updates.contains(&update) {
            return Ok(());
        }
        w.updates.push(update);
        if !w.services.contains(&service) {
            w.services.push(service);
        }
        for (a, t) in sources {
            let known = w.sources.entry(a).or_insert(t);
            *known = (*known).max(t);
            let ids = self.watched.entry(a).or_default();
            if !ids.iter().any(|x| x == request) {
                ids.push(request.to_string());
            }
        }
        self.store.save_watch(w)?;
        Ok(())
    }

    fn unwatch(&mut self, id: &str) {
        if let Some(w) = self.watches.remove(id) {
            for a in w.sources.keys() {
                if let Some(ids) = self.watched.get_mut(a) {
                    ids.retain(|x| x != id);
                    if ids.is_empty() {
                        self.watched.remove(a);
                    }
                }
            }
        }
        self.unsaved.remove(id);
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
    ///
    /// With campaigns on and a hold set, an alert that would make a request and joins no
    /// campaign whose requests were sent is held (in the ledger, with its flows) instead:
    /// the outcome says `held`, and [`Packager::release_held`] builds its packages, one
    /// request per State for the alerts of its campaign.
    pub fn package_recorded(
        &mut self,
        alert: &Alert,
        flows: &[FlowRecord],
        flows_received_ns: Option<u64>,
        now_ns: u64,
    ) -> Result<PackageOutcome> {
        let c = self.cfg.campaign;
        if self
            .campaigns
            .iter()
            .any(|m| m.alert_id == alert.id && m.in_request)
        {
            // Packaged with its campaign's request when its hold ended.
            return Ok(PackageOutcome::default());
        }
        if c.enabled && c.hold_ns > 0 && !self.campaigns.iter().any(|m| m.alert_id == alert.id) {
            if self.held.iter().any(|h| h.alert.id == alert.id) {
                return Ok(PackageOutcome {
                    held: true,
                    ..PackageOutcome::default()
                });
            }
            let m = crate::campaign::Member::of(alert);
            let joins_sent = self
                .campaigns
                .iter()
                .any(|x| crate::campaign::related(x, &m, &c));
            let mut out = PackageOutcome::default();
            let plan = self.plan_alert(alert, &mut out)?;
            if !joins_sent && plan.packages.iter().any(is_request) {
                let wanted: std::collections::HashSet<IpAddr> =
                    alert.top_sources.iter().map(|s| s.addr).collect();
                let h = crate::campaign::Held {
                    alert: alert.clone(),
                    flows: flows
                        .iter()
                        .filter(|f| f.asset.as_ref().is_none_or(|a| a.id == alert.asset))
                        .filter(|f| wanted.contains(&f.orig_addr) || wanted.contains(&f.resp_addr))
                        .cloned()
                        .collect(),
                    flows_received_ns,
                    until_ns: self
                        .watermark_ns
                        .max(alert.window_end_ns)
                        .saturating_add(c.hold_ns),
                };
                self.store.add_hold(&h)?;
                self.held.push(h);
                out.held = true;
                return Ok(out);
            }
        }
        self.package_now(alert, flows, flows_received_ns, now_ns)
    }

    /// Attributes `alert`'s sources and plans its packages; lookup failures and the own
    /// State's sources go into `out`.
    fn plan_alert(&self, alert: &Alert, out: &mut PackageOutcome) -> Result<recipients::Plan> {
        let mut attributions: BTreeMap<_, Attribution> = BTreeMap::new();
        for s in &alert.top_sources {
            match self.geo.lookup(s.addr) {
                Ok(a) => {
                    attributions.insert(s.addr, a);
                }
                Err(e) => out.lookup_errors.push(e.to_string()),
            }
        }
        // The detector's spoofing assessment names the forged sources (reflectors answer
        // forged requests from real addresses and stay out).
        let spoofed: Vec<IpAddr> = if alert.spoofing.as_ref().is_some_and(|s| s.likely_spoofed) {
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
            self.cfg.request.tlp,
        )?;
        out.own_state_sources = plan.own_state_sources.len();
        Ok(plan)
    }

    fn build_input<'a>(
        &'a self,
        alert: &'a Alert,
        flows: &'a [FlowRecord],
        planned: &'a recipients::PlannedPackage,
        (requester, geo): (
            &'a recipients::Recipient,
            &'a [crate::attribution::DbProvenance],
        ),
        packaged_at_ns: u64,
        flows_received_ns: Option<u64>,
    ) -> BuildInput<'a> {
        BuildInput {
            alert,
            flows,
            planned,
            requester,
            operator: &self.cfg.operator,
            asset_operator: self
                .asset_operators
                .get(alert.asset.as_str())
                .map(String::as_str),
            settings: &self.cfg.request,
            norms: &self.norms,
            geo,
            packaged_at_ns,
            flows_received_ns,
        }
    }

    fn requester(&self) -> Result<recipients::Recipient> {
        self.directory
            .get(&self.cfg.own_state)
            .cloned()
            .ok_or_else(|| Error::Config(format!("no entry for own_state {}", self.cfg.own_state)))
    }

    /// Stores a built package for `p`'s recipient and notes it in `out`.
    fn store_built(
        &mut self,
        pkg: &package::Package,
        p: &recipients::PlannedPackage,
        now_ns: u64,
        out: &mut PackageOutcome,
    ) -> Result<bool> {
        if p.recipient.channels.is_empty() {
            out.undeliverable.push(pkg.id.clone());
        }
        let new = self.store.put(pkg, &p.recipient, now_ns)?;
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
            out.stored.push(pkg.id.clone());
        } else {
            out.already_stored.push(pkg.id.clone());
        }
        Ok(new)
    }

    /// The held alerts whose hold has ended at the current event time (all of them with
    /// `all`: at the end of input or when the stage stops), packaged: each group of held
    /// alerts that are one campaign (whatever order they arrived in) gets one request per
    /// State naming every alert's service and carrying each alert's evidence; their other
    /// packages (provider abuse, traceback) are built per alert as usual. Returns each
    /// released alert with what packaging it did (a campaign request is counted under the
    /// campaign's first alert). A release cut short by a crash is repeated whole after a
    /// restart: the first build of each package is kept, nothing is queued twice.
    pub fn release_held(&mut self, now_ns: u64, all: bool) -> Result<Vec<(Alert, PackageOutcome)>> {
        if self.held.is_empty() {
            return Ok(Vec::new());
        }
        // No group is due before the earliest hold of its members has ended.
        let earliest = self.held.iter().map(|h| h.until_ns).min().unwrap_or(0);
        if !all && self.watermark_ns < earliest {
            return Ok(Vec::new());
        }
        let members: Vec<crate::campaign::Member> = self
            .held
            .iter()
            .map(|h| crate::campaign::Member::of(&h.alert))
            .collect();
        let mut released = Vec::new();
        for g in crate::campaign::groups(&members, &self.cfg.campaign) {
            let until = g.iter().map(|i| self.held[*i].until_ns).max().unwrap_or(0);
            if all || self.watermark_ns >= until {
                released.push(g.iter().map(|i| self.held[*i].clone()).collect::<Vec<_>>());
            }
        }
        let mut out = Vec::new();
        for group in released {
            // An alert that joined a sent campaign since may link the group to it: the
            // group's alerts then join that campaign, as updates of its requests.
            // (Its own alerts, recorded by a release a crash cut short, do not count.)
            let own = |id: &str| group.iter().any(|h| h.alert.id == id);
            let joins_sent = group.iter().any(|h| {
                let m = crate::campaign::Member::of(&h.alert);
                self.campaigns.iter().any(|x| {
                    !own(&x.alert_id) && crate::campaign::related(x, &m, &self.cfg.campaign)
                })
            });
            if joins_sent {
                for h in &group {
                    let o = self.package_now(&h.alert, &h.flows, h.flows_received_ns, now_ns)?;
                    out.push((h.alert.clone(), o));
                }
            } else {
                out.extend(self.release_group(&group, now_ns)?);
            }
            let ids: Vec<String> = group.iter().map(|h| h.alert.id.clone()).collect();
            self.store.release_holds(&ids)?;
            self.held.retain(|h| !ids.contains(&h.alert.id));
        }
        Ok(out)
    }

    /// Alerts still held for their campaign's request.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn release_group(
        &mut self,
        group: &[crate::campaign::Held],
        now_ns: u64,
    ) -> Result<Vec<(Alert, PackageOutcome)>> {
        let Some(first) = group.first() else {
            return Ok(Vec::new());
        };
        // The campaign is named after its first alert (window start, then id); an alert
        // recorded before (a release cut short) keeps its campaign.
        let cid = match self.campaigns.iter().find(|m| m.alert_id == first.alert.id) {
            Some(m) => m.campaign_id.clone(),
            None => crate::campaign::campaign_id(&first.alert.id),
        };
        for h in group {
            let mut m = crate::campaign::Member::of(&h.alert);
            if !self.campaigns.iter().any(|x| x.alert_id == m.alert_id) {
                m.campaign_id = cid.clone();
                m.in_request = true;
                self.store.add_campaign_member(&m)?;
                self.campaigns.push(m);
            }
        }
        let requester = self.requester()?;
        let geo = self.geo.provenance();
        let mut outs: Vec<(Alert, PackageOutcome)> = Vec::new();
        // (recipient, State) → (member index, planned request)
        type Parts = BTreeMap<(String, Option<String>), Vec<(usize, recipients::PlannedPackage)>>;
        let mut requests: Parts = BTreeMap::new();
        for (k, h) in group.iter().enumerate() {
            let mut out = PackageOutcome::default();
            let plan = self.plan_alert(&h.alert, &mut out)?;
            for p in plan.packages {
                if is_request(&p) {
                    requests
                        .entry((p.recipient.code.clone(), p.about_state.clone()))
                        .or_default()
                        .push((k, p));
                    continue;
                }
                let pkg = package::build(
                    self.build_input(
                        &h.alert,
                        &h.flows,
                        &p,
                        (&requester, &geo),
                        now_ns,
                        h.flows_received_ns,
                    ),
                    &self.key,
                )?;
                self.store_built(&pkg, &p, now_ns, &mut out)?;
            }
            outs.push((h.alert.clone(), out));
        }
        for ((code, _), parts) in requests {
            let pkg = {
                let inputs: Vec<BuildInput<'_>> = parts
                    .iter()
                    .map(|(k, p)| {
                        let h = &group[*k];
                        self.build_input(
                            &h.alert,
                            &h.flows,
                            p,
                            (&requester, &geo),
                            now_ns,
                            h.flows_received_ns,
                        )
                    })
                    .collect();
                if inputs.len() == 1 {
                    package::build(inputs[0], &self.key)?
                } else {
                    package::build_campaign(&cid, &inputs, &self.key)?
                }
            };
            let (k0, p0) = &parts[0];
            let out = &mut outs[*k0].1;
            self.store_built(&pkg, p0, now_ns, out)?;
            self.store
                .set_campaign_request(&cid, &code, &pkg.id, &group[*k0].alert.id)?;
            if self.cfg.follow_up.enabled
                && !p0.recipient.channels.is_empty()
                && !self.watches.contains_key(&pkg.id)
            {
                let mut w = self.request_watch(&group[*k0].alert, &group[*k0].flows, p0, &pkg.id);
                let mut named: Vec<String> = Vec::new();
                for (k, p) in &parts {
                    let h = &group[*k];
                    let other = self.request_watch(&h.alert, &h.flows, p, &pkg.id);
                    w.requested_ns = w.requested_ns.max(other.requested_ns);
                    for (a, t) in other.sources {
                        let known = w.sources.entry(a).or_insert(t);
                        *known = (*known).max(t);
                    }
                    let l = crate::campaign::Member::of(&h.alert).label();
                    if !named.contains(&l) {
                        named.push(l);
                    }
                }
                w.observed_ns = w.requested_ns;
                w.deadline_ns = w
                    .requested_ns
                    .saturating_add(self.cfg.follow_up.deadline_ns);
                w.campaign = Some(cid.clone());
                w.services = named;
                if self.store.add_request(&w)? {
                    outs[*k0].1.requests.push((pkg.id.clone(), code.clone()));
                    self.watch(w);
                }
            }
        }
        for (a, _) in &outs {
            self.store.alert_packaged(&a.id)?;
        }
        Ok(outs)
    }

    /// Packages `alert` at once (no hold).
    fn package_now(
        &mut self,
        alert: &Alert,
        flows: &[FlowRecord],
        flows_received_ns: Option<u64>,
        now_ns: u64,
    ) -> Result<PackageOutcome> {
        let mut out = PackageOutcome::default();
        let mut plan = self.plan_alert(alert, &mut out)?;
        // One request per State and campaign: a later alert of the campaign updates it.
        let campaign = if self.cfg.campaign.enabled {
            Some(self.campaign_of(alert)?)
        } else {
            None
        };
        if let Some((cid, services)) = &campaign {
            for p in plan.packages.iter_mut().filter(|p| is_request(p)) {
                if let Some((request, first)) =
                    self.store.campaign_request(cid, &p.recipient.code)?
                {
                    if first != alert.id {
                        p.campaign = Some(recipients::CampaignUpdate {
                            id: cid.clone(),
                            update_of: request,
                            services: services.clone(),
                        });
                    }
                }
            }
        }
        let requester = self.requester()?;
        let geo = self.geo.provenance();
        let mut watches = Vec::new();
        let mut updates = Vec::new();
        for p in &plan.packages {
            let pkg = package::build(
                self.build_input(
                    alert,
                    flows,
                    p,
                    (&requester, &geo),
                    now_ns,
                    flows_received_ns,
                ),
                &self.key,
            )?;
            self.store_built(&pkg, p, now_ns, &mut out)?;
            let request = is_request(p);
            if let (Some((cid, _)), true, None) = (&campaign, request, &p.campaign) {
                self.store
                    .set_campaign_request(cid, &p.recipient.code, &pkg.id, &alert.id)?;
            }
            if let Some(cu) = &p.campaign {
                // An update: its sources join the request's follow-up.
                let w = self.request_watch(alert, flows, p, &pkg.id);
                let label = crate::campaign::Member::of(alert).label();
                updates.push((cu.update_of.clone(), pkg.id.clone(), w.sources, label));
            } else if self.cfg.follow_up.enabled
                && request
                && !p.recipient.channels.is_empty()
                && !self.watches.contains_key(&pkg.id)
            {
                let mut w = self.request_watch(alert, flows, p, &pkg.id);
                w.campaign = campaign.as_ref().map(|c| c.0.clone());
                w.services = vec![crate::campaign::Member::of(alert).label()];
                if self.store.add_request(&w)? {
                    out.requests
                        .push((pkg.id.clone(), p.recipient.code.clone()));
                    watches.push(w);
                }
            }
        }
        for w in watches {
            self.watch(w);
        }
        for (request, update, sources, label) in updates {
            self.join_update(&request, update, sources, label)?;
        }
        self.store.alert_packaged(&alert.id)?;
        Ok(out)
    }

    /// The watch of a new request: its sources with the last time the alert's flows saw each,
    /// requested at the current event time.
    fn request_watch(
        &self,
        alert: &Alert,
        flows: &[FlowRecord],
        p: &recipients::PlannedPackage,
        id: &str,
    ) -> Watch {
        let requested_ns = self.watermark_ns.max(alert.window_end_ns);
        let sources = p
            .sources
            .iter()
            .map(|s| {
                let a = s.source.addr;
                let last = flows
                    .iter()
                    .filter(|f| f.orig_addr == a)
                    .map(|f| f.last_ns)
                    .max()
                    .unwrap_or(alert.window_end_ns);
                (a, last)
            })
            .collect();
        Watch {
            package_id: id.to_string(),
            alert_id: alert.id.clone(),
            recipient: p.recipient.code.clone(),
            about_state: p.about_state.clone(),
            requested_ns,
            deadline_ns: requested_ns.saturating_add(self.cfg.follow_up.deadline_ns),
            sources,
            observed_ns: requested_ns,
            stopped_ns: None,
            stop_seen_ns: None,
            resumed_ns: None,
            active_at_deadline: None,
            sent: Vec::new(),
            closed: false,
            quiet_ns: self.cfg.follow_up.quiet_ns,
            campaign: None,
            updates: Vec::new(),
            services: Vec::new(),
        }
    }

    /// The campaign of `alert` (recorded now if it is new) and every service the campaign
    /// impaired so far, in the order seen.
    fn campaign_of(&mut self, alert: &Alert) -> Result<(String, Vec<String>)> {
        let cid = match self.campaigns.iter().find(|m| m.alert_id == alert.id) {
            Some(m) => m.campaign_id.clone(),
            None => {
                let mut m = crate::campaign::Member::of(alert);
                m.campaign_id = crate::campaign::assign(&self.campaigns, &m, &self.cfg.campaign);
                self.store.add_campaign_member(&m)?;
                let cid = m.campaign_id.clone();
                self.campaigns.push(m);
                cid
            }
        };
        let mut services: Vec<String> = Vec::new();
        for m in self.campaigns.iter().filter(|m| m.campaign_id == cid) {
            let l = m.label();
            if !services.contains(&l) {
                services.push(l);
            }
        }
        Ok((cid, services))
    }

    /// Takes flow records into the follow-up of requests: the event time moves to the latest
    /// record, and a record from a listed source towards a protected asset moves that source's
    /// last-seen time.
    pub fn observe(&mut self, records: &[FlowRecord]) {
        for r in records {
            self.watermark_ns = self.watermark_ns.max(r.last_ns);
            if self.watched.is_empty() || r.asset.is_none() {
                continue;
            }
            let Some(ids) = self.watched.get(&r.orig_addr) else {
                continue;
            };
            for id in ids {
                if let Some(w) = self.watches.get_mut(id) {
                    if w.observe(r.orig_addr, r.last_ns) {
                        self.unsaved.insert(id.clone());
                    }
                }
            }
        }
    }

    /// The event time the follow-ups have reached.
    pub fn event_time_ns(&self) -> u64 {
        self.watermark_ns
    }

    /// Moves every watched request to the current event time and stores the follow-ups that
    /// are due (a request's follow-ups wait until the request itself was delivered). `now_ns`
    /// (wall clock) is only the ledger's queueing time.
    pub fn follow_up(&mut self, now_ns: u64) -> Result<Vec<FollowUpSent>> {
        let now = self.watermark_ns;
        let quiet = self.cfg.follow_up.quiet_ns;
        let mut out = Vec::new();
        let mut done = Vec::new();
        let ids: Vec<String> = self.watches.keys().cloned().collect();
        for id in ids {
            let Some(w) = self.watches.get_mut(&id) else {
                continue;
            };
            let before = (w.stopped_ns, w.active_at_deadline);
            let due = w.advance(now, quiet);
            if before != (w.stopped_ns, w.active_at_deadline) {
                self.unsaved.insert(id.clone());
            }
            if due.is_empty() || !self.store.delivered(&id)? {
                continue;
            }
            // A State removed from the directory since gets no follow-up (its request stays
            // in the ledger, shown without one by `normwatch requests`).
            let Some(recipient) = self.directory.get(&w.recipient).cloned() else {
                continue;
            };
            let attribution_path = self
                .store
                .package_dir(&id)
                .join("evidence/attribution.json");
            let attribution =
                std::fs::read(&attribution_path).map_err(|e| Error::io(&attribution_path, e))?;
            let requester = self.directory.get(&self.cfg.own_state).ok_or_else(|| {
                Error::Config(format!("no entry for own_state {}", self.cfg.own_state))
            })?;
            for kind in due {
                let at = w.observed_ns;
                let active = w.active_at(at, quiet);
                let pkg = followup::build(
                    followup::FollowUpInput {
                        kind,
                        watch: w,
                        quiet_ns: quiet,
                        at_ns: at,
                        recipient: &recipient,
                        requester,
                        operator: &self.cfg.operator,
                        settings: &self.cfg.request,
                        attribution: &attribution,
                    },
                    &self.key,
                )?;
                w.mark(kind);
                let new = self
                    .store
                    .put_follow_up(&pkg, &recipient, w, kind, active, now_ns)?;
                out.push(FollowUpSent {
                    id: pkg.id,
                    kind,
                    watch: w.clone(),
                    active,
                    new,
                });
            }
            self.unsaved.remove(&id);
            if w.closed {
                done.push(id);
            }
        }
        for id in done {
            self.unwatch(&id);
        }
        if now >= self.saved_at_ns.saturating_add(SAVE_EVERY_NS) || !out.is_empty() {
            self.save_watches()?;
            self.saved_at_ns = now;
        }
        Ok(out)
    }

    /// Saves every watch with unsaved observations (also called when the stage stops).
    pub fn save_watches(&mut self) -> Result<()> {
        for id in std::mem::take(&mut self.unsaved) {
            if let Some(w) = self.watches.get(&id) {
                self.store.save_watch(w)?;
            }
        }
        Ok(())
    }

    /// Records the replies recipients left on channels that carry them: signed reply files
    /// in directory channels, notes on TAXII collections (see
    /// [`Store::poll_replies_with`]).
    pub fn poll_replies(&mut self, now_ns: u64) -> Result<Vec<crate::store::Reply>> {
        Ok(self.poll_replies_reporting(now_ns)?.0)
    }

    /// [`Packager::poll_replies`], with the collections that could not be read (each
    /// `channel: why`; tried again on the next poll).
    pub fn poll_replies_reporting(
        &mut self,
        now_ns: u64,
    ) -> Result<(Vec<crate::store::Reply>, Vec<String>)> {
        let directory = &self.directory;
        let own =
            crate::stix::operator_id(&self.cfg.operator.name, self.cfg.operator.email.as_ref());
        self.store.poll_replies_with(
            now_ns,
            |code| {
                let hex = directory.get(code)?.public_key.as_deref()?;
                let bytes = crate::canon::unhex::<32>(hex)?;
                crate::keys::PublicKey::from_bytes(&bytes)
            },
            Some(&own),
            self.timeout,
        )
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
