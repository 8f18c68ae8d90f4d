//! The `edge-agent` binary under a service manager's eyes: started as systemd starts a
//! `Type=notify` unit with `WatchdogSec=` (deploy/edge-agent.service), it says `READY=1`,
//! keeps pinging `WATCHDOG=1` at half the watchdog period while its actors run, and says
//! `STOPPING=1` on SIGTERM. The notifications are read from a real datagram socket.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The agent process, killed when the test ends however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next notification, within `wait`.
fn next(sock: &UnixDatagram, wait: Duration) -> String {
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a notification arrived in time");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn the_agent_notifies_ready_then_pings_the_watchdog_and_says_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cabinet.toml");
    // No broker on this port: the link keeps retrying, which must not stop the pings.
    std::fs::write(
        &config,
        format!(
            "cabinet = \"cab-watchdog\"\ndata_dir = \"{}\"\nhttp_listen = \"127.0.0.1:{}\"\n[mqtt]\nport = {}\n\
             [[compartments]]\nid = \"A1\"\nsize = \"m\"\n",
            dir.path().join("data").display(),
            free_port(),
            free_port(),
        ),
    )
    .unwrap();
    let agent = |arg: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_edge-agent"));
        c.arg("--config").arg(&config).arg(arg).env("RUST_LOG", "error").stdin(Stdio::null());
        c
    };
    assert!(agent("provision").stdout(Stdio::null()).status().unwrap().success());

    let socket_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    // 400 ms watchdog: a ping every 200 ms.
    let started = Instant::now();
    let mut proc = Proc(
        agent("run")
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "400000")
            .env_remove("WATCHDOG_PID")
            .spawn()
            .unwrap(),
    );
    assert_eq!(next(&sock, Duration::from_secs(30)), "READY=1");
    let mut pings = Vec::new();
    for _ in 0..4 {
        assert_eq!(next(&sock, Duration::from_secs(5)), "WATCHDOG=1");
        pings.push(Instant::now());
    }
    // Periodic at half the period: ticks are at least 200 ms apart, so three gaps take
    // most of 600 ms (a slow first probe may eat into it), and none is a long silence.
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(pings[3] - pings[0] >= Duration::from_millis(400), "pings came in a burst: {gaps:?}");
    assert!(gaps.iter().all(|g| *g < Duration::from_secs(5)), "{gaps:?}");
    assert!(started.elapsed() >= Duration::from_millis(400));

    let status = Command::new("kill").arg("-TERM").arg(proc.0.id().to_string()).status().unwrap();
    assert!(status.success());
    // Pings already in flight may come first; then STOPPING=1.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let note = next(&sock, deadline.saturating_duration_since(Instant::now()));
        if note == "STOPPING=1" {
            break;
        }
        assert_eq!(note, "WATCHDOG=1", "unexpected notification");
    }
    let exit = proc.0.wait().unwrap();
    assert!(exit.success(), "the agent did not stop cleanly: {exit}");
}

#[test]
fn without_notify_socket_the_agent_runs_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cabinet.toml");
    let http = free_port();
    std::fs::write(
        &config,
        format!(
            "cabinet = \"cab-plain\"\ndata_dir = \"{}\"\nhttp_listen = \"127.0.0.1:{http}\"\n[mqtt]\nport = {}\n\
             [[compartments]]\nid = \"A1\"\nsize = \"m\"\n",
            dir.path().join("data").display(),
            free_port(),
        ),
    )
    .unwrap();
    let agent = |arg: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_edge-agent"));
        c.arg("--config").arg(&config).arg(arg).env("RUST_LOG", "error").stdin(Stdio::null());
        c.env_remove("NOTIFY_SOCKET").env_remove("WATCHDOG_USEC");
        c
    };
    assert!(agent("provision").stdout(Stdio::null()).status().unwrap().success());
    let mut proc = Proc(agent("run").spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(proc.0.try_wait().unwrap().is_none(), "the agent exited without NOTIFY_SOCKET");
        assert!(Instant::now() < deadline, "the agent did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill").arg("-TERM").arg(proc.0.id().to_string()).status().unwrap();
    assert!(status.success());
    assert!(proc.0.wait().unwrap().success());
}
