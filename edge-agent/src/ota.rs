//! Updates on the cabinet: A/B slots and the updater actor.
//!
//! The updater takes an offer, checks the signed manifest (trusted key, hardware,
//! anti-rollback floor) before touching anything, downloads with resume (`Range`) and
//! bounded retries, checks size and sha256, waits for the maintenance window and for the
//! cabinet's update lock (no door open, no pickup under way), installs into the inactive
//! slot, marks it to boot once unconfirmed, and restarts. The next start runs the new
//! slot; if it is healthy within the deadline it is confirmed, otherwise the cabinet
//! switches back by itself. Every step is reported to the rollout.
//!
//! [`DirSlots`] simulates the slots with two folders and a pointer file written
//! atomically, so a power cut at any moment leaves a slot that boots; a real integration
//! (RAUC, SWUpdate, Mender) implements [`SlotBackend`] over the bootloader's own A/B
//! state (see docs/ota.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::prelude::*;
use chrono::{Local, Timelike};
use lockerfleet_shared::artifact::{ArtifactError, DigestCheck, SignedManifest, Version};
use lockerfleet_shared::envelope::{OtaOffer, OtaReport, OtaStatus};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Boots of a new slot without a confirmation before the cabinet gives up on it.
pub const MAX_UNCONFIRMED_BOOTS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotId {
    A,
    B,
}

impl SlotId {
    pub fn other(self) -> SlotId {
        match self {
            SlotId::A => SlotId::B,
            SlotId::B => SlotId::A,
        }
    }

    fn dir(self) -> &'static str {
        match self {
            SlotId::A => "a",
            SlotId::B => "b",
        }
    }
}

/// A slot booted but not yet confirmed healthy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingBoot {
    pub slot: SlotId,
    pub rollout: Uuid,
    pub tries: u32,
    /// The release's security floor, in force once the slot is confirmed.
    pub floor: String,
}

/// The persistent state of the slots (the "pointer").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotState {
    /// The slot confirmed good: what boots when nothing is pending.
    pub active: SlotId,
    pub pending: Option<PendingBoot>,
    /// Versions installed in each slot (`None`: the factory image).
    pub versions: [Option<String>; 2],
    /// Nothing older than this may be installed again.
    pub floor: String,
    /// The outcome of the last update, kept until the server has been told.
    pub unreported: Option<OtaReport>,
}

impl SlotState {
    pub fn version_of(&self, s: SlotId) -> Option<&String> {
        self.versions[s as usize].as_ref()
    }
}

/// What a slot implementation does; the updater needs nothing else.
pub trait SlotBackend: Send + 'static {
    fn state(&self) -> &SlotState;
    /// The slot running now (pending if one was booted for trial).
    fn booted(&self) -> SlotId {
        self.state().pending.as_ref().map_or(self.state().active, |p| p.slot)
    }
    /// Writes the image into the inactive slot (never the running one).
    fn install(&mut self, image: &Path, manifest: &SignedManifest) -> std::io::Result<()>;
    /// Boots the inactive slot next, on trial; `floor` takes effect when it confirms.
    fn try_next(&mut self, rollout: Uuid, floor: &str) -> std::io::Result<()>;
    /// Counts a boot of the pending slot; after too many the cabinet goes back by itself.
    fn count_boot(&mut self) -> std::io::Result<Option<OtaReport>>;
    /// The trial slot is healthy: it becomes the active one, the floor rises.
    fn confirm(&mut self) -> std::io::Result<OtaReport>;
    /// The trial slot is not healthy: back to the active one.
    fn roll_back(&mut self, why: &str) -> std::io::Result<OtaReport>;
    /// Whether the image in `slot` passes its own health check.
    fn healthy(&self, slot: SlotId) -> bool;
    fn set_unreported(&mut self, r: Option<OtaReport>) -> std::io::Result<()>;
}

/// Two folders and an atomically replaced pointer file.
#[derive(Debug)]
pub struct DirSlots {
    root: PathBuf,
    state: SlotState,
}

/// The marker a simulated image carries to fail its health check after booting.
pub const SIM_FAIL_HEALTH: &[u8] = b"LOCKERFLEET-SIM-FAIL-HEALTH";

impl DirSlots {
    /// Opens (or creates) the slots under `root`; removes leftovers of an install that a
    /// power cut interrupted.
    pub fn open(root: &Path, factory_floor: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("a"))?;
        std::fs::create_dir_all(root.join("b"))?;
        for s in ["a", "b"] {
            let _ = std::fs::remove_file(root.join(s).join("image.tmp"));
        }
        let state = match std::fs::read(root.join("state.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SlotState {
                active: SlotId::A,
                pending: None,
                versions: [None, None],
                floor: factory_floor.to_owned(),
                unreported: None,
            },
            Err(e) => return Err(e),
        };
        Ok(Self { root: root.to_owned(), state })
    }

    fn save(&self) -> std::io::Result<()> {
        let tmp = self.root.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.state).map_err(std::io::Error::other)?)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, self.root.join("state.json"))?;
        std::fs::File::open(&self.root)?.sync_all()
    }

    fn report(rollout: Uuid, status: OtaStatus, detail: impl Into<String>) -> OtaReport {
        OtaReport { rollout, status, detail: Some(detail.into()), percent: None }
    }
}

impl SlotBackend for DirSlots {
    fn state(&self) -> &SlotState {
        &self.state
    }

    fn install(&mut self, image: &Path, manifest: &SignedManifest) -> std::io::Result<()> {
        let target = self.booted().other();
        let dir = self.root.join(target.dir());
        let tmp = dir.join("image.tmp");
        std::fs::copy(image, &tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join("image"))?;
        std::fs::write(dir.join("manifest.json"), serde_json::to_vec(manifest).map_err(std::io::Error::other)?)?;
        self.state.versions[target as usize] = Some(manifest.manifest.version.clone());
        self.save()
    }

    fn try_next(&mut self, rollout: Uuid, floor: &str) -> std::io::Result<()> {
        let slot = self.state.active.other();
        self.state.pending = Some(PendingBoot { slot, rollout, tries: 0, floor: floor.to_owned() });
        self.save()
    }

    fn count_boot(&mut self) -> std::io::Result<Option<OtaReport>> {
        let Some(p) = self.state.pending.as_mut() else { return Ok(None) };
        p.tries += 1;
        if p.tries > MAX_UNCONFIRMED_BOOTS {
            let why = format!("the new slot did not confirm in {MAX_UNCONFIRMED_BOOTS} boots");
            return self.roll_back(&why).map(Some);
        }
        self.save()?;
        Ok(None)
    }

    fn confirm(&mut self) -> std::io::Result<OtaReport> {
        let Some(p) = self.state.pending.take() else {
            return Err(std::io::Error::other("no slot is waiting for confirmation"));
        };
        self.state.active = p.slot;
        let raise = match (p.floor.parse::<Version>(), self.state.floor.parse::<Version>()) {
            (Ok(new), Ok(old)) => new > old,
            _ => false,
        };
        if raise {
            self.state.floor = p.floor.clone();
        }
        let version = self.state.version_of(p.slot).cloned().unwrap_or_default();
        let r = Self::report(p.rollout, OtaStatus::Succeeded, format!("running {version}"));
        self.state.unreported = Some(r.clone());
        self.save()?;
        Ok(r)
    }

    fn roll_back(&mut self, why: &str) -> std::io::Result<OtaReport> {
        let Some(p) = self.state.pending.take() else {
            return Err(std::io::Error::other("no slot to roll back from"));
        };
        let r = Self::report(p.rollout, OtaStatus::RolledBack, why);
        self.state.unreported = Some(r.clone());
        self.save()?;
        Ok(r)
    }

    fn healthy(&self, slot: SlotId) -> bool {
        match std::fs::read(self.root.join(slot.dir()).join("image")) {
            Ok(bytes) => !bytes.windows(SIM_FAIL_HEALTH.len()).any(|w| w == SIM_FAIL_HEALTH),
            // The factory image (nothing installed yet) is healthy.
            Err(_) => self.state.version_of(slot).is_none(),
        }
    }

    fn set_unreported(&mut self, r: Option<OtaReport>) -> std::io::Result<()> {
        self.state.unreported = r;
        self.save()
    }
}

/// The updater's settings (`[ota]` in cabinet.toml).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtaConfig {
    /// Release public keys (base64 Ed25519) this cabinet trusts.
    pub trusted_keys: Vec<String>,
    /// The version this cabinet may never go below, before any update raised it.
    pub factory_floor: String,
    /// A new slot must be healthy (connected to the server) within this, seconds.
    pub health_deadline_s: u64,
    /// Download attempts before reporting a failure.
    pub download_attempts: u32,
    /// How the agent restarts into the new slot: `exit` (the service manager starts it
    /// again) — the only one today.
    pub restart: String,
}

impl Default for OtaConfig {
    fn default() -> Self {
        Self {
            trusted_keys: Vec::new(),
            factory_floor: "0.0.0".into(),
            health_deadline_s: 60,
            download_attempts: 7,
            restart: "exit".into(),
        }
    }
}

impl OtaConfig {
    pub fn keys(&self) -> Result<Vec<ed25519_dalek::VerifyingKey>, String> {
        lockerfleet_shared::artifact::parse_keys("ota.trusted_keys", &self.trusted_keys)
    }
}

/// Messages to the updater.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum ToUpdater {
    Offer(Box<OtaOffer>),
    Cancel(Uuid),
}

/// Where the updater sends its reports (the link).
#[derive(Debug, Clone, Message)]
#[rtype(result = "bool")]
pub struct Report(pub OtaReport);

/// How the updater asks for a restart into the new slot.
pub type Restart = Box<dyn Fn() + Send>;

pub struct Updater {
    slots: Box<dyn SlotBackend>,
    config: OtaConfig,
    hardware: String,
    dir: PathBuf,
    cabinet: Addr<crate::actors::cabinet::Cabinet>,
    link: Addr<crate::actors::link::Link>,
    restart: Restart,
    /// The rollout being worked on, and whether it was cancelled.
    current: Option<Uuid>,
    cancelled: Option<Uuid>,
    /// Rolled back, waiting to restart into the previous slot: no new offer is taken.
    restarting: bool,
}

impl std::fmt::Debug for Updater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updater").field("current", &self.current).finish_non_exhaustive()
    }
}

impl Updater {
    pub fn new(
        slots: Box<dyn SlotBackend>,
        config: OtaConfig,
        hardware: String,
        dir: PathBuf,
        cabinet: Addr<crate::actors::cabinet::Cabinet>,
        link: Addr<crate::actors::link::Link>,
        restart: Restart,
    ) -> Self {
        Self { slots, config, hardware, dir, cabinet, link, restart, current: None, cancelled: None, restarting: false }
    }

    /// The version the running slot holds (`None`: the factory image).
    pub fn running_version(slots: &dyn SlotBackend) -> Option<String> {
        slots.state().version_of(slots.booted()).cloned()
    }

    fn send(&self, ctx: &mut Context<Self>, r: OtaReport) {
        tracing::info!(rollout = %r.rollout, status = ?r.status, detail = r.detail.as_deref().unwrap_or(""), "update");
        self.link.send(Report(r)).into_actor(self).map(|_, _, _| ()).spawn(ctx);
    }

    fn refuse(&self, ctx: &mut Context<Self>, rollout: Uuid, why: String) {
        self.send(ctx, OtaReport { rollout, status: OtaStatus::Refused, detail: Some(why), percent: None });
    }
}

impl Actor for Updater {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A slot on trial: healthy within the deadline, or back to the old one.
        if let Some(p) = self.slots.state().pending.clone() {
            let deadline = std::time::Instant::now() + Duration::from_secs(self.config.health_deadline_s);
            // Only the trial this process booted into: a later one needs its own restart.
            let key = (p.rollout, p.slot);
            let this_trial =
                move |act: &Self| act.slots.state().pending.as_ref().is_some_and(|q| (q.rollout, q.slot) == key);
            ctx.run_interval(Duration::from_millis(250), move |act, ctx| {
                if !this_trial(act) {
                    return;
                }
                let healthy_image = act.slots.healthy(p.slot);
                let timed_out = std::time::Instant::now() > deadline;
                act.link
                    .send(crate::actors::link::GetLinkState)
                    .into_actor(act)
                    .map(move |state, act, ctx| {
                        if !this_trial(act) {
                            return;
                        }
                        let connected = state.map(|s| s.connected).unwrap_or(false);
                        if healthy_image && connected {
                            match act.slots.confirm() {
                                Ok(r) => act.send(ctx, r),
                                Err(e) => tracing::error!(error = %e, "could not confirm the new slot"),
                            }
                        } else if !healthy_image || timed_out {
                            let why = if healthy_image {
                                "the new version did not reach the server in time"
                            } else {
                                "the new version failed its health check"
                            };
                            match act.slots.roll_back(why) {
                                Ok(r) => {
                                    tracing::error!(why, "rolling back to the previous slot");
                                    act.send(ctx, r);
                                    // The old slot boots next, but not while a door is
                                    // open or a pickup is under way (the new version may
                                    // well be handing out parcels offline).
                                    act.restart_when_idle(ctx);
                                }
                                Err(e) => tracing::error!(error = %e, "could not roll back"),
                            }
                        }
                    })
                    .spawn(ctx);
            });
        }
        // The outcome of the last update, until the server has it.
        ctx.run_interval(Duration::from_secs(2), |act, ctx| {
            let Some(r) = act.slots.state().unreported.clone() else { return };
            if act.slots.state().pending.is_some() {
                return;
            }
            act.link
                .send(Report(r))
                .into_actor(act)
                .map(|sent, act, _| {
                    if sent.unwrap_or(false) {
                        let _ = act.slots.set_unreported(None);
                    }
                })
                .spawn(ctx);
        });
    }
}

/// Powered off: the updater stops (it is not supervised); a download under way ends
/// with it and resumes from its `.part` file after the next start.
impl Handler<crate::actors::PowerOff> for Updater {
    type Result = ();

    fn handle(&mut self, _: crate::actors::PowerOff, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<ToUpdater> for Updater {
    type Result = ();

    fn handle(&mut self, msg: ToUpdater, ctx: &mut Self::Context) {
        let offer = match msg {
            ToUpdater::Cancel(rollout) => {
                if self.current == Some(rollout) {
                    self.cancelled = Some(rollout);
                }
                return;
            }
            ToUpdater::Offer(o) => *o,
        };
        if self.current.is_some() || self.restarting {
            return; // one update at a time; the server offers again if it needs to
        }
        // Everything about the release is checked before a byte is downloaded.
        let keys = match self.config.keys() {
            Ok(k) => k,
            Err(e) => return self.refuse(ctx, offer.rollout, e),
        };
        let man = match offer.manifest.verify(&keys) {
            Ok(m) => m.clone(),
            Err(e) => return self.refuse(ctx, offer.rollout, e.to_string()),
        };
        let floor: Version = self.slots.state().floor.parse().unwrap_or(Version(0, 0, 0));
        if let Err(e) = man.installable_on(&self.hardware, floor) {
            return self.refuse(ctx, offer.rollout, e.to_string());
        }
        if Self::running_version(self.slots.as_ref()).as_deref() == Some(man.version.as_str()) {
            // Already running it (a repeated offer): say so again.
            let r = OtaReport {
                rollout: offer.rollout,
                status: OtaStatus::Succeeded,
                detail: Some(format!("already running {}", man.version)),
                percent: None,
            };
            return self.send(ctx, r);
        }
        self.current = Some(offer.rollout);
        let dir = self.dir.clone();
        let attempts = self.config.download_attempts.max(1);
        let link = self.link.clone();
        let rollout = offer.rollout;
        let url = offer.url.clone();
        let m2 = man.clone();
        async move { download(&url, &dir, &m2, attempts, rollout, link).await }
            .into_actor(self)
            .map(move |result, act, ctx| match result {
                Ok(file) => act.install_when_allowed(ctx, offer, file),
                Err(e) => {
                    act.current = None;
                    let status =
                        if matches!(e, DownloadError::Verify(_)) { OtaStatus::Refused } else { OtaStatus::Failed };
                    act.send(ctx, OtaReport { rollout, status, detail: Some(e.to_string()), percent: None });
                }
            })
            .spawn(ctx);
    }
}

impl Updater {
    /// Restarts once the cabinet grants the update lock (no door open, no flow under way),
    /// asking again every 2 s; at once if the cabinet actor is gone.
    fn restart_when_idle(&mut self, ctx: &mut Context<Self>) {
        self.restarting = true;
        self.cabinet
            .send(crate::actors::cabinet::BeginUpdate)
            .into_actor(self)
            .map(|granted, _act, ctx| match granted {
                Ok(Err(why)) => {
                    tracing::info!(why, "the restart into the previous slot waits for the cabinet to be idle");
                    ctx.run_later(Duration::from_secs(2), |act, ctx| act.restart_when_idle(ctx));
                }
                // Give the report a moment to leave, then boot the old slot.
                Ok(Ok(())) | Err(_) => {
                    ctx.run_later(Duration::from_millis(500), |act, _| (act.restart)());
                }
            })
            .spawn(ctx);
    }

    /// Waits for the window and the update lock, then installs and restarts.
    fn install_when_allowed(&mut self, ctx: &mut Context<Self>, offer: OtaOffer, file: PathBuf) {
        let rollout = offer.rollout;
        if self.cancelled == Some(rollout) {
            self.current = None;
            self.cancelled = None;
            let _ = std::fs::remove_file(&file);
            return;
        }
        let now = Local::now();
        let minute = now.hour() * 60 + now.minute();
        if let Some(w) = offer.window
            && !w.contains(minute)
        {
            self.send(ctx, OtaReport { rollout, status: OtaStatus::WaitingWindow, detail: None, percent: None });
            ctx.run_later(Duration::from_secs(30), move |act, ctx| act.install_when_allowed(ctx, offer, file));
            return;
        }
        self.cabinet
            .send(crate::actors::cabinet::BeginUpdate)
            .into_actor(self)
            .map(move |granted, act, ctx| match granted {
                Ok(Ok(())) => act.install(ctx, &offer, &file),
                other => {
                    let why = match other {
                        Ok(Err(why)) => why,
                        Err(e) => e.to_string(),
                        Ok(Ok(())) => String::new(),
                    };
                    tracing::info!(why, "update waits for the cabinet to be idle");
                    ctx.run_later(Duration::from_secs(2), move |act, ctx| act.install_when_allowed(ctx, offer, file));
                }
            })
            .spawn(ctx);
    }

    fn install(&mut self, ctx: &mut Context<Self>, offer: &OtaOffer, file: &Path) {
        let rollout = offer.rollout;
        let report = |status| OtaReport { rollout, status, detail: None, percent: None };
        self.send(ctx, report(OtaStatus::Installing));
        let floor = offer.manifest.manifest.security_floor.clone();
        let done = self.slots.install(file, &offer.manifest).and_then(|()| self.slots.try_next(rollout, &floor));
        let _ = std::fs::remove_file(file);
        match done {
            Ok(()) => {
                self.send(ctx, report(OtaStatus::Rebooting));
                ctx.run_later(Duration::from_millis(500), |act, _| (act.restart)());
            }
            Err(e) => {
                self.current = None;
                self.cabinet.do_send(crate::actors::cabinet::EndUpdate);
                self.send(
                    ctx,
                    OtaReport { rollout, status: OtaStatus::Failed, detail: Some(e.to_string()), percent: None },
                );
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("download failed after {attempts} attempts: {last}")]
    Transport { attempts: u32, last: String },
    #[error("the downloaded artifact does not match its signed manifest: {0}")]
    Verify(ArtifactError),
    #[error("cannot write the download: {0}")]
    Io(#[from] std::io::Error),
}

/// The longest wait between two download attempts.
const MAX_DOWNLOAD_BACKOFF: Duration = Duration::from_secs(30);

/// The wait before retry `n` (1 for the first) of a download: 1 s doubling up to
/// [`MAX_DOWNLOAD_BACKOFF`], of which a share between half and all (`unit` in [0, 1)), so
/// cabinets that failed together (a web tier restarting or overloaded) do not come back
/// together. The default seven attempts span 30.5 to 61 s: a link that drops for half a
/// minute costs a retry, not the rollout's much longer `retry_base_s`.
fn download_backoff(n: u32, unit: f64) -> Duration {
    let full = Duration::from_secs(1u64 << n.saturating_sub(1).min(5)).min(MAX_DOWNLOAD_BACKOFF);
    full.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// Downloads to `dir/<sha256>.part`, resuming with `Range` after a broken connection,
/// with bounded retries and backoff; checks size and hash before returning the file.
async fn download(
    url: &str,
    dir: &Path,
    man: &lockerfleet_shared::artifact::ArtifactManifest,
    attempts: u32,
    rollout: Uuid,
    link: Addr<crate::actors::link::Link>,
) -> Result<PathBuf, DownloadError> {
    use futures_util::StreamExt;
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let part = dir.join(format!("{}.part", man.sha256));
    let http = awc::Client::builder().timeout(Duration::from_secs(60)).finish();
    let mut last = String::new();
    let mut reported = 0u8;
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(download_backoff(attempt, rand::random())).await;
        }
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if have > man.size {
            std::fs::remove_file(&part)?;
            continue;
        }
        if have < man.size {
            let mut req = http.get(url);
            if have > 0 {
                req = req.insert_header(("Range", format!("bytes={have}-")));
            }
            let mut res = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let status = res.status().as_u16();
            let mut file = match status {
                206 => std::fs::OpenOptions::new().append(true).open(&part)?,
                200 => std::fs::File::create(&part)?,
                other => {
                    last = format!("HTTP {other}");
                    continue;
                }
            };
            let mut written = if status == 206 { have } else { 0 };
            let mut broken = false;
            while let Some(chunk) = res.next().await {
                match chunk {
                    Ok(bytes) => {
                        file.write_all(&bytes)?;
                        written += bytes.len() as u64;
                        let percent = (written * 100 / man.size.max(1)).min(100) as u8;
                        if percent >= reported.saturating_add(25) {
                            reported = percent - percent % 25;
                            link.do_send(Report(OtaReport {
                                rollout,
                                status: OtaStatus::Downloading,
                                detail: None,
                                percent: Some(reported),
                            }));
                        }
                    }
                    Err(e) => {
                        last = e.to_string();
                        broken = true;
                        break;
                    }
                }
            }
            file.sync_all()?;
            if broken {
                continue;
            }
        }
        // Whole: check it against the signed manifest.
        let mut check = DigestCheck::new();
        let mut f = std::fs::File::open(&part)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = std::io::Read::read(&mut f, &mut buf)?;
            if n == 0 {
                break;
            }
            check.update(&buf[..n]);
        }
        return match check.finish(man) {
            Ok(()) => {
                link.do_send(Report(OtaReport {
                    rollout,
                    status: OtaStatus::Downloaded,
                    detail: None,
                    percent: Some(100),
                }));
                Ok(part)
            }
            Err(e) => {
                std::fs::remove_file(&part)?;
                Err(DownloadError::Verify(e))
            }
        };
    }
    Err(DownloadError::Transport { attempts, last })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn manifest(version: &str, floor: &str) -> SignedManifest {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        lockerfleet_shared::artifact::sign(
            lockerfleet_shared::artifact::describe("edge-agent", version, &["lf-cab-sim"], floor, b"x"),
            &key,
        )
    }

    #[test]
    fn download_retries_back_off_with_jitter_up_to_half_a_minute() {
        let waits = |unit: f64| (1..=6).map(|n| download_backoff(n, unit).as_secs_f64()).collect::<Vec<_>>();
        assert_eq!(waits(1.0), [1.0, 2.0, 4.0, 8.0, 16.0, 30.0], "the longest waits double up to the cap");
        assert_eq!(waits(0.0), [0.5, 1.0, 2.0, 4.0, 8.0, 15.0], "the shortest are half of them");
        assert_eq!(download_backoff(40, 1.0), MAX_DOWNLOAD_BACKOFF, "no overflow far past the cap");
        let default = OtaConfig::default().download_attempts;
        let span = |unit: f64| (1..default).map(|n| download_backoff(n, unit).as_secs_f64()).sum::<f64>();
        assert!(span(0.0) >= 30.0 && span(1.0) <= 61.0, "the default attempts span {}..{} s", span(0.0), span(1.0));
    }

    #[test]
    fn an_install_interrupted_by_a_power_cut_leaves_the_running_slot_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let mut slots = DirSlots::open(dir.path(), "1.0.0").unwrap();
        // The cut: the image half-copied into the inactive slot, the pointer never moved.
        std::fs::write(dir.path().join("b/image.tmp"), b"half an ima").unwrap();
        drop(slots);
        slots = DirSlots::open(dir.path(), "1.0.0").unwrap();
        assert_eq!(slots.booted(), SlotId::A);
        assert!(slots.state().pending.is_none());
        assert!(!dir.path().join("b/image.tmp").exists(), "the leftover is cleaned");
        assert!(slots.healthy(SlotId::A));
    }

    #[test]
    fn a_trial_slot_is_confirmed_or_abandoned_and_the_floor_only_rises() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("img");
        std::fs::write(&image, b"version 2").unwrap();
        let mut slots = DirSlots::open(&dir.path().join("slots"), "1.0.0").unwrap();
        let rollout = Uuid::now_v7();
        slots.install(&image, &manifest("2.0.0", "1.5.0")).unwrap();
        slots.try_next(rollout, "1.5.0").unwrap();
        // Power cut right after switching: the next start boots the trial slot.
        let mut slots = DirSlots::open(&dir.path().join("slots"), "1.0.0").unwrap();
        assert_eq!(slots.booted(), SlotId::B);
        assert_eq!(slots.count_boot().unwrap(), None);
        let r = slots.confirm().unwrap();
        assert_eq!(r.status, OtaStatus::Succeeded);
        assert_eq!(slots.state().active, SlotId::B);
        assert_eq!(slots.state().floor, "1.5.0");
        assert_eq!(Updater::running_version(&slots).as_deref(), Some("2.0.0"));
        assert!(slots.confirm().is_err(), "nothing left to confirm");

        // A bad image: it fails its health check and goes back.
        std::fs::write(&image, [b"version 3 ".as_slice(), SIM_FAIL_HEALTH].concat()).unwrap();
        slots.install(&image, &manifest("3.0.0", "1.0.0")).unwrap();
        slots.try_next(rollout, "1.0.0").unwrap();
        assert!(!slots.healthy(slots.booted()));
        let r = slots.roll_back("health").unwrap();
        assert_eq!(r.status, OtaStatus::RolledBack);
        assert_eq!(slots.booted(), SlotId::B, "back on the confirmed slot");
        assert_eq!(slots.state().floor, "1.5.0", "a rollback never lowers the floor");
    }

    #[test]
    fn a_slot_that_keeps_crashing_before_confirming_is_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("img");
        std::fs::write(&image, b"crashy").unwrap();
        let root = dir.path().join("slots");
        let mut slots = DirSlots::open(&root, "1.0.0").unwrap();
        slots.install(&image, &manifest("2.0.0", "1.0.0")).unwrap();
        slots.try_next(Uuid::now_v7(), "1.0.0").unwrap();
        for boot in 1..=MAX_UNCONFIRMED_BOOTS {
            let mut s = DirSlots::open(&root, "1.0.0").unwrap();
            assert_eq!(s.count_boot().unwrap(), None, "boot {boot}");
        }
        let mut s = DirSlots::open(&root, "1.0.0").unwrap();
        let r = s.count_boot().unwrap().unwrap();
        assert_eq!(r.status, OtaStatus::RolledBack);
        assert_eq!(s.booted(), SlotId::A);
        assert!(DirSlots::open(&root, "1.0.0").unwrap().state().unreported.is_some(), "reported once connected");
    }

    /// A new version that fails its health check while a door stands open: the rollback is
    /// recorded at once, the restart into the old slot waits until the door is shut.
    #[actix_rt::test]
    async fn a_rollback_restarts_only_once_the_doors_are_shut() {
        use crate::actors::cabinet::{Cabinet, DoorSensed};
        use lockerfleet_shared::CompartmentId;
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("img");
        std::fs::write(&image, [b"version 2 ".as_slice(), SIM_FAIL_HEALTH].concat()).unwrap();
        let root = dir.path().join("slots");
        let mut slots = DirSlots::open(&root, "1.0.0").unwrap();
        slots.install(&image, &manifest("2.0.0", "1.0.0")).unwrap();
        slots.try_next(Uuid::now_v7(), "1.0.0").unwrap();
        let slots = DirSlots::open(&root, "1.0.0").unwrap(); // booted into the trial

        let a1 = CompartmentId::new("A1").unwrap();
        let journal = crate::domain::journal::Journal::open(&dir.path().join("journal.log"), 1 << 20).unwrap();
        let desired = crate::domain::desired::DesiredStore::open(&dir.path().join("desired.json"));
        let cabinet = Cabinet::new(
            journal,
            desired,
            std::slice::from_ref(&a1),
            Box::new(crate::hw::SimLock::default()),
            dir.path().join("done.json"),
            crate::domain::door::DoorTimings::default(),
        )
        .start();
        // A door forced open: the cabinet is not idle.
        cabinet.send(DoorSensed { compartment: a1.clone(), open: true }).await.unwrap();
        // A link to a broker that is not there: never connected.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let identity = crate::actors::link::Identity {
            cabinet: lockerfleet_shared::CabinetId::new("cab-ota").unwrap(),
            firmware: "2.0.0".into(),
            hardware: "lf-cab-sim".into(),
            compartments: Vec::new(),
            key_fingerprint: "00".repeat(16),
            model: None,
        };
        let settings = crate::actors::link::LinkSettings {
            host: "127.0.0.1".into(),
            port,
            keep_alive: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            heartbeat: Duration::from_secs(30),
            resend: Duration::from_secs(5),
            password: None,
            tls: None,
            clock_offset: chrono::Duration::zero(),
        };
        let link = crate::actors::link::Link::new(
            identity,
            lockerfleet_shared::TopicSpace::new(None).unwrap(),
            &settings,
            cabinet.clone(),
        )
        .start();
        let restarts = Arc::new(AtomicUsize::new(0));
        let counted = restarts.clone();
        let config = OtaConfig { health_deadline_s: 1, ..OtaConfig::default() };
        let restart: Restart = Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let _updater = Updater::new(
            Box::new(slots),
            config,
            "lf-cab-sim".into(),
            dir.path().join("ota"),
            cabinet.clone(),
            link,
            restart,
        )
        .start();

        let until = |what: &'static str, check: Box<dyn Fn() -> bool>| async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !check() {
                assert!(std::time::Instant::now() < deadline, "{what} within 20 s");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let state_root = root.clone();
        until(
            "the rollback on disk",
            Box::new(move || DirSlots::open(&state_root, "1.0.0").unwrap().state().pending.is_none()),
        )
        .await;
        // The old code restarted 500 ms after the rollback; give it several times that.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(restarts.load(Ordering::SeqCst), 0, "restarted with a door open");
        cabinet.send(DoorSensed { compartment: a1, open: false }).await.unwrap();
        let seen = restarts.clone();
        until("the restart once the door is shut", Box::new(move || seen.load(Ordering::SeqCst) == 1)).await;
    }
}
