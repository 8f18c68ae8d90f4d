//! Pickup codes are hashed (argon2id, ~60 ms and 19 MiB each) on a few threads of their
//! own that run at a lower OS priority than the rest of the server.
//!
//! ```text
//!   create_and_assign ──(code, reply)──► queue ──► lf-code-hash-0..n  (nice +10)
//!        awaits reply ◄───────── PHC string ◄─────┘
//! ```
//!
//! Creating parcels is bulk work: a courier company posts a day's manifest at once.
//! Ingest, the outbox's pushes to cabinets (codes, sealed templates) and the API answer
//! a cabinet or a person waiting now. Hashing on the async runtime's blocking pool at
//! normal priority let a burst of creations take every core for minutes, and the pushes
//! queued behind it. At a lower priority the hashes still use every idle core, but
//! yield to the rest of the server whenever it has work. The queue is unbounded: each job is
//! a code and a reply channel, and the callers are bounded by the API's own limits.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

/// How much lower than the server's threads the hashing threads run (added to the
/// process's `nice` value, up to the lowest priority, 19; Linux only, elsewhere they run
/// at the server's priority).
const NICENESS: i32 = 10;
/// Hashing threads at most (each works in 19 MiB).
const MAX_THREADS: usize = 4;

type Job = (String, tokio::sync::oneshot::Sender<String>);

static QUEUE: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();

/// The PHC string of `code`'s argon2id hash, computed on a hashing thread.
pub async fn hash(code: String) -> Result<String, String> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    queue()
        .lock()
        .map_err(|_| "the hashing queue is poisoned".to_owned())?
        .send((code, reply))
        .map_err(|_| "no hashing thread is running".to_owned())?;
    answer.await.map_err(|_| "the hashing thread stopped before it answered".to_owned())
}

/// Starts the hashing threads now (the server does at start), so the first parcel
/// created does not wait for them; [`hash`] starts them too if nobody did.
pub fn start() {
    let _ = queue();
}

/// How many hashing threads run: one per core, up to [`MAX_THREADS`].
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS)
}

fn queue() -> &'static Mutex<mpsc::Sender<Job>> {
    QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let (ready_tx, ready) = mpsc::channel::<()>();
        let mut started = 0;
        for i in 0..threads() {
            let rx = rx.clone();
            let ready_tx = ready_tx.clone();
            let spawned = std::thread::Builder::new().name(format!("lf-code-hash-{i}")).spawn(move || {
                lower_priority();
                let _ = ready_tx.send(());
                loop {
                    // One thread waits on the queue while the others hash or wait for the lock.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((code, reply)) = job else { return };
                    // The caller gave up (its request was dropped): skip the 60 ms.
                    if reply.is_closed() {
                        continue;
                    }
                    let _ = reply.send(lockerfleet_shared::codes::hash(&code));
                }
            });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::error!(error = %e, "could not start a pickup-code hashing thread"),
            }
        }
        // Every thread is running at its lower priority before the first job is queued
        // (once per process, a few milliseconds).
        for _ in 0..started {
            if ready.recv_timeout(std::time::Duration::from_secs(5)).is_err() {
                tracing::warn!("a pickup-code hashing thread was slow to start");
                break;
            }
        }
        Mutex::new(tx)
    })
}

/// Lowers the calling thread's scheduling priority by [`NICENESS`] (on Linux,
/// `getpriority`/`setpriority` with `PRIO_PROCESS` and no pid apply to the calling
/// thread only).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let lowered = getpriority_process(None).map(|now| (now + NICENESS).min(19));
        if let Err(e) = lowered.and_then(|nice| setpriority_process(None, nice)) {
            tracing::warn!(error = %e, "could not lower a hashing thread's priority; it runs at the server's");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_made_on_the_pool_verify() {
        let phcs = futures_util::future::join_all((0..6).map(|i| hash(format!("1234567{i}")))).await;
        for (i, phc) in phcs.into_iter().enumerate() {
            let phc = phc.expect("a hashing thread answers");
            assert!(lockerfleet_shared::codes::verify(&format!("1234567{i}"), &phc), "{phc}");
            assert!(!lockerfleet_shared::codes::verify("00000000", &phc));
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_hashing_threads_run_below_normal_priority() {
        hash("12345678".into()).await.expect("a hashing thread answers");
        let ours = rustix::process::getpriority_process(None).expect("this thread's nice value");
        let expected = (ours + NICENESS).min(19);
        // Each hashing thread's nice value, from /proc (field 19 of its stat line).
        let mut nices = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").expect("/proc is mounted") {
            let dir = task.expect("a task entry").path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.trim().starts_with("lf-code-hash") {
                let stat = std::fs::read_to_string(dir.join("stat")).expect("the task's stat");
                let after_name = &stat[stat.rfind(')').expect("stat names the task") + 2..];
                let nice: i32 = after_name.split(' ').nth(16).expect("the nice field").parse().expect("a number");
                nices.push(nice);
            }
        }
        assert_eq!(nices.len(), threads(), "one hashing thread per core, up to {MAX_THREADS}");
        assert!(nices.iter().all(|n| *n == expected), "hashing threads' nice values {nices:?}, not {expected}");
    }
}
