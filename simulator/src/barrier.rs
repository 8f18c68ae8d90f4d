//! Several simulator processes running one fleet (`--barrier DIR --barrier-of N`): they
//! meet in a folder. Each writes what it registered and waits for the others, so every
//! cabinet of the fleet starts connecting in the same window; each waits again until
//! every process's cabinets are online, so the traffic starts on a fleet that is all
//! there. When the scenario has a rollout, the processes also share it: one rollout for
//! the whole fleet, as an operator would start it, rather than one per process.
//!
//! ```text
//!   DIR/<prefix>.registered   one per process: its cabinet ids, one per line
//!   DIR/<prefix>.connected    one per process: all its cabinets are online
//!   DIR/rollout               the leader's rollout: its id, then its version
//!   DIR/<prefix>.failed       a process that gave up, and why: the others stop waiting
//! ```
//!
//! The leader is the process whose prefix sorts first. Every file is written under a
//! temporary name and renamed, so a reader never sees half of one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::fleet::until_every;

const POLL: Duration = Duration::from_millis(200);
const REGISTERED: &str = "registered";
const CONNECTED: &str = "connected";
const ROLLOUT: &str = "rollout";
const FAILED: &str = "failed";

/// Tells the other processes of the fleet that this one gave up, and why, so they stop
/// waiting for it. Best effort: the run is failing already.
pub fn fail(dir: &Path, prefix: &str, why: &str) {
    let part = dir.join(format!(".{prefix}.{FAILED}.part"));
    if std::fs::create_dir_all(dir).is_ok() && std::fs::write(&part, why).is_ok() {
        let _ = std::fs::rename(&part, dir.join(format!("{prefix}.{FAILED}")));
    }
}

/// One process's place in the meeting folder.
#[derive(Debug, Clone)]
pub struct Barrier {
    dir: PathBuf,
    prefix: String,
    of: usize,
}

impl Barrier {
    pub fn new(dir: &Path, prefix: &str, of: usize) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir: dir.to_owned(), prefix: prefix.to_owned(), of })
    }

    /// Writes `text` into `DIR/name` as a whole.
    fn publish(&self, name: &str, text: &str) -> anyhow::Result<()> {
        let part = self.dir.join(format!(".{name}.part"));
        std::fs::write(&part, text).with_context(|| format!("writing {}", part.display()))?;
        std::fs::rename(&part, self.dir.join(name)).with_context(|| format!("renaming {}", part.display()))
    }

    /// The prefixes that have written a `<prefix>.<stage>` file, sorted.
    fn arrived(&self, stage: &str) -> Vec<String> {
        let suffix = format!(".{stage}");
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter_map(|n| n.strip_suffix(&suffix).map(str::to_owned))
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Another process's failure, if one gave up: its prefix and why.
    fn failure(&self) -> Option<String> {
        let p = self.arrived(FAILED).into_iter().find(|p| p != &self.prefix)?;
        let why = std::fs::read_to_string(self.dir.join(format!("{p}.{FAILED}"))).unwrap_or_default();
        Some(format!("simulator process {p} of this fleet gave up: {why}"))
    }

    async fn meet(&self, stage: &str, text: &str, deadline: Instant) -> anyhow::Result<Vec<String>> {
        self.publish(&format!("{}.{stage}", self.prefix), text)?;
        let ready = || async { self.failure().is_some() || self.arrived(stage).len() >= self.of };
        let met = until_every(deadline, POLL, ready).await;
        if let Some(why) = self.failure() {
            bail!(why);
        }
        if !met {
            bail!(
                "only {} of {} simulator processes reached the barrier ({stage}) in {}",
                self.arrived(stage).len(),
                self.of,
                self.dir.display()
            );
        }
        Ok(self.arrived(stage))
    }

    /// Says this process registered `cabinets` and waits for the others.
    pub async fn registered(&self, cabinets: &[String], deadline: Instant) -> anyhow::Result<()> {
        self.meet(REGISTERED, &(cabinets.join("\n") + "\n"), deadline).await.map(drop)
    }

    /// Says every cabinet of this process is online and waits until all processes' are.
    pub async fn connected(&self, deadline: Instant) -> anyhow::Result<()> {
        self.meet(CONNECTED, "", deadline).await.map(drop)
    }

    /// Whether this process starts what the fleet shares.
    pub fn leads(&self) -> bool {
        self.arrived(REGISTERED).first() == Some(&self.prefix)
    }

    /// Every cabinet the processes registered, in the order of their prefixes.
    pub fn fleet(&self) -> anyhow::Result<Vec<String>> {
        let mut all = Vec::new();
        for p in self.arrived(REGISTERED) {
            let path = self.dir.join(format!("{p}.{REGISTERED}"));
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            all.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_owned));
        }
        Ok(all)
    }

    /// The leader's word: this is the fleet's rollout.
    pub fn share_rollout(&self, id: &str, version: &str) -> anyhow::Result<()> {
        self.publish(ROLLOUT, &format!("{id}\n{version}\n"))
    }

    /// Waits for the leader's rollout: its id and version.
    pub async fn rollout(&self, deadline: Instant) -> anyhow::Result<(String, String)> {
        let path = self.dir.join(ROLLOUT);
        let read = || {
            let text = std::fs::read_to_string(&path).ok()?;
            let mut lines = text.lines();
            Some((lines.next()?.to_owned(), lines.next()?.to_owned()))
        };
        let ready = || async { self.failure().is_some() || read().is_some() };
        let shared = until_every(deadline, POLL, ready).await;
        if let Some(why) = self.failure() {
            bail!(why);
        }
        if !shared {
            bail!("the leading simulator process started no rollout (no {})", path.display());
        }
        read().context("rollout file vanished")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn three_processes_meet_and_share_one_fleet_and_one_rollout() {
        let dir = tempfile::tempdir().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let b: Vec<Barrier> = ["s1", "s0", "s2"].iter().map(|p| Barrier::new(dir.path(), p, 3).unwrap()).collect();
        let ids = |p: &str| (0..2).map(|i| format!("{p}-{i:05}")).collect::<Vec<_>>();
        // Two arrive: neither passes yet.
        let early = Instant::now() + Duration::from_millis(300);
        let (a, c) =
            futures_util::future::join(b[0].registered(&ids("s1"), early), b[1].registered(&ids("s0"), early)).await;
        assert!(a.is_err() && c.is_err(), "two of three must not pass the barrier");
        // The third arrives: all pass; s0 leads; the fleet is every id, once.
        b[2].registered(&ids("s2"), deadline).await.unwrap();
        b[0].registered(&ids("s1"), deadline).await.unwrap();
        assert!(b[1].leads() && !b[0].leads() && !b[2].leads());
        let fleet = b[0].fleet().unwrap();
        assert_eq!(fleet.len(), 6);
        assert_eq!(fleet[0], "s0-00000");
        assert_eq!(fleet[5], "s2-00001");
        // Followers wait for the leader's rollout.
        assert!(b[2].rollout(Instant::now()).await.is_err(), "no rollout shared yet");
        let (got, ()) = futures_util::future::join(b[2].rollout(deadline), async {
            tokio::task::yield_now().await;
            b[1].share_rollout("r-1", "2.0.7").unwrap();
        })
        .await;
        assert_eq!(got.unwrap(), ("r-1".to_owned(), "2.0.7".to_owned()));
        // Temporary names never count as arrivals.
        assert_eq!(b[0].arrived(REGISTERED), vec!["s0", "s1", "s2"]);
    }

    #[actix_rt::test]
    async fn a_process_that_gives_up_stops_the_others_waiting_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let far = Instant::now() + Duration::from_secs(600);
        let a = Barrier::new(dir.path(), "s0", 2).unwrap();
        let (waited, ()) = futures_util::future::join(a.registered(&["s0-00000".into()], far), async {
            tokio::task::yield_now().await;
            fail(dir.path(), "s1", "registering: 503 busy");
        })
        .await;
        let e = waited.expect_err("s1 gave up: s0 must not pass").to_string();
        assert!(e.contains("s1") && e.contains("503 busy"), "{e}");
        assert!(Instant::now() < far - Duration::from_secs(590), "it stopped waiting at once");
        // Its own failure file does not stop a process itself.
        assert!(a.failure().is_some());
        fail(dir.path(), "s0", "x");
        assert!(a.failure().is_some_and(|f| f.contains("s1")));
    }
}
