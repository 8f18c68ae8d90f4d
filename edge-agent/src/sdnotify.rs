//! systemd's service notifications: `READY=1` when the agent runs, `WATCHDOG=1` while it
//! is healthy, `STOPPING=1` on the way out (`sd_notify(3)`, written here without libsystemd).
//!
//! ```text
//!   systemd ──$NOTIFY_SOCKET, $WATCHDOG_USEC──► agent
//!   agent   ──"READY=1"──────────────────────► (once the actors run and HTTP listens)
//!   every WATCHDOG_USEC/2: ask the cabinet and link actors; both answered in time?
//!           ──"WATCHDOG=1"───────────────────► (else nothing: systemd kills and restarts)
//! ```
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op, so the same binary runs
//! under a shell, a container or the simulator unchanged.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use actix::Addr;

use crate::actors::cabinet::{Cabinet, GetStatus};
use crate::actors::link::{GetLinkState, Link};

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET {0:?} is neither an absolute path nor an abstract socket (@name)")]
    BadSocket(String),
    #[error("cannot write to NOTIFY_SOCKET {socket:?}: {source}")]
    Send {
        socket: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where systemd listens for this service's notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    /// Linux abstract namespace (`@name` in `NOTIFY_SOCKET`).
    Abstract(Vec<u8>),
}

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    target: Target,
    /// `NOTIFY_SOCKET` as given, for error messages.
    name: String,
}

impl Notifier {
    /// The notifier systemd asked for, or `None` when not started by systemd with
    /// `Type=notify` (no `NOTIFY_SOCKET`).
    pub fn from_env() -> Result<Option<Self>, NotifyError> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(s) if !s.is_empty() => Self::new(&s).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for the socket named as in `NOTIFY_SOCKET`.
    pub fn new(socket: &str) -> Result<Self, NotifyError> {
        let target = if let Some(name) = socket.strip_prefix('@') {
            Target::Abstract(name.as_bytes().to_vec())
        } else if socket.starts_with('/') {
            Target::Path(PathBuf::from(socket))
        } else {
            return Err(NotifyError::BadSocket(socket.to_owned()));
        };
        let send = |source| NotifyError::Send { socket: socket.to_owned(), source };
        Ok(Self { socket: UnixDatagram::unbound().map_err(send)?, target, name: socket.to_owned() })
    }

    /// Sends one notification, e.g. `READY=1` or `WATCHDOG=1`.
    pub fn notify(&self, state: &str) -> Result<(), NotifyError> {
        let send = |source| NotifyError::Send { socket: self.name.clone(), source };
        match &self.target {
            Target::Path(p) => self.socket.send_to(state.as_bytes(), p).map(drop).map_err(send),
            Target::Abstract(name) => {
                #[cfg(target_os = "linux")]
                {
                    use std::os::linux::net::SocketAddrExt;
                    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).map_err(send)?;
                    self.socket.send_to_addr(state.as_bytes(), &addr).map(drop).map_err(send)
                }
                #[cfg(not(target_os = "linux"))]
                {
                    let _ = name;
                    Err(NotifyError::BadSocket(self.name.clone()))
                }
            }
        }
    }

    /// Sends, and logs a failure instead of returning it: a lost notification must not
    /// stop a cabinet (systemd restarts the agent if the watchdog goes silent).
    pub fn notify_or_log(&self, state: &str) {
        if let Err(e) = self.notify(state) {
            tracing::warn!(error = %e, state, "systemd notification failed");
        }
    }
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, when systemd set it for this
/// process (`WATCHDOG_PID` unset or ours). `None`: no watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn interval_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(me)) {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// Starts the watchdog pings on the current actix system: every `every`, `alive` is asked
/// and `WATCHDOG=1` is sent only if it answered `true`.
pub fn spawn_watchdog<F, Fut>(notifier: std::sync::Arc<Notifier>, every: Duration, alive: F)
where
    F: Fn() -> Fut + 'static,
    Fut: Future<Output = bool> + 'static,
{
    actix::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if alive().await {
                notifier.notify_or_log("WATCHDOG=1");
            } else {
                tracing::error!("the cabinet or link actor did not answer; withholding the watchdog ping");
            }
        }
    });
}

/// Whether the cabinet and link actors both answer within `within`: their mailboxes are
/// being served, so the agent is doing its job.
pub async fn actors_answer(cabinet: &Addr<Cabinet>, link: &Addr<Link>, within: Duration) -> bool {
    let cabinet = cabinet.send(GetStatus).timeout(within);
    let link = link.send(GetLinkState).timeout(within);
    let (c, l) = futures_util::future::join(cabinet, link).await;
    c.is_ok() && l.is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;

    fn receiver() -> (tempfile::TempDir, UnixDatagram, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (dir, sock, path.display().to_string())
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn notifications_arrive_on_a_path_socket() {
        let (_dir, sock, path) = receiver();
        let n = Notifier::new(&path).unwrap();
        n.notify("READY=1").unwrap();
        n.notify("WATCHDOG=1").unwrap();
        assert_eq!(recv(&sock), "READY=1");
        assert_eq!(recv(&sock), "WATCHDOG=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn notifications_arrive_on_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("lockerfleet-test-{}", uuid::Uuid::new_v4().simple());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::new(&format!("@{name}")).unwrap().notify("READY=1").unwrap();
        assert_eq!(recv(&sock), "READY=1");
    }

    #[test]
    fn a_relative_socket_name_is_refused_with_its_name() {
        let e = Notifier::new("notify.sock").unwrap_err();
        assert!(e.to_string().contains("notify.sock"), "{e}");
    }

    #[test]
    fn sending_to_a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::new(&dir.path().join("gone.sock").display().to_string()).unwrap();
        assert!(matches!(n.notify("READY=1"), Err(NotifyError::Send { .. })));
    }

    #[test]
    fn the_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only() {
        assert_eq!(interval_from(Some("30000000"), None, 7), Some(Duration::from_secs(15)));
        assert_eq!(interval_from(Some("30000000"), Some("7"), 7), Some(Duration::from_secs(15)));
        assert_eq!(interval_from(Some("30000000"), Some("8"), 7), None, "meant for another process");
        assert_eq!(interval_from(None, None, 7), None);
        assert_eq!(interval_from(Some("0"), None, 7), None);
        assert_eq!(interval_from(Some("soon"), None, 7), None);
    }

    #[actix_rt::test]
    async fn the_watchdog_pings_only_while_the_probe_says_alive() {
        let (_dir, sock, path) = receiver();
        let alive = std::rc::Rc::new(std::cell::Cell::new(true));
        let probe = alive.clone();
        let (asked_tx, mut asked) = tokio::sync::mpsc::unbounded_channel();
        spawn_watchdog(std::sync::Arc::new(Notifier::new(&path).unwrap()), Duration::from_millis(10), move || {
            let _ = asked_tx.send(());
            let answer = probe.get();
            async move { answer }
        });
        // Two pings while alive, received on the real socket.
        let sock = std::sync::Arc::new(sock);
        for _ in 0..2 {
            let s = sock.clone();
            assert_eq!(tokio::task::spawn_blocking(move || recv(&s)).await.unwrap(), "WATCHDOG=1");
        }
        // Dead: the probe is asked three more times and nothing more arrives.
        alive.set(false);
        while asked.try_recv().is_ok() {}
        for _ in 0..3 {
            asked.recv().await.unwrap();
        }
        // A ping already in flight when the probe turned may still be queued; drain it,
        // then the socket must stay empty while the probe keeps saying no.
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        while sock.recv(&mut buf).is_ok() {}
        for _ in 0..3 {
            asked.recv().await.unwrap();
        }
        assert!(sock.recv(&mut buf).is_err(), "a ping was sent while the probe said dead");
    }
}
