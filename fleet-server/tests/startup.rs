//! Starting and stopping the real binary: bad configuration and busy ports end it with
//! a message that names the key or the port; SIGTERM stops it gracefully.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fleet-server"));
    // The test's own environment must not leak a configuration in.
    for (k, _) in std::env::vars() {
        if k.starts_with("FLEET_") {
            c.env_remove(k);
        }
    }
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run_to_end(mut cmd: Command) -> (i32, String) {
    let out = cmd.output().expect("run fleet-server");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_bad_environment_value_names_its_key() {
    let mut cmd = bin();
    cmd.env("FLEET_DATABASE__URL", "mysql://nope").arg("check-config");
    let (code, err) = run_to_end(cmd);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("database.url"), "{err}");
}

#[test]
fn the_config_file_can_be_named_by_fleet_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.toml");
    std::fs::write(&file, "[http]\nlisten = \"127.0.0.1:0\"\n[parcels]\nexpiry_sweep_s = 7\n").unwrap();
    let mut cmd = bin();
    // Any other FLEET_ variable without a section is not configuration either.
    cmd.env("FLEET_CONFIG", &file).env("FLEET_DEPLOYMENT", "blue").arg("check-config");
    let (code, err) = run_to_end(cmd);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("\"expiry_sweep_s\": 7"), "the file was read: {err}");
}

#[test]
fn an_unknown_key_in_the_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.toml");
    std::fs::write(&file, "[http]\nlisten = \"127.0.0.1:0\"\nworkers = 4\n").unwrap();
    let mut cmd = bin();
    cmd.arg("--config").arg(&file).arg("check-config");
    let (code, err) = run_to_end(cmd);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("workers"), "{err}");
}

#[test]
fn a_busy_http_port_is_named() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = bin();
    cmd.env("FLEET_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("FLEET_MQTT__LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("FLEET_DATABASE__URL", format!("sqlite://{}?mode=rwc", dir.path().join("f.db").display()));
    let (code, err) = run_to_end(cmd);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("127.0.0.1:{port}")) && err.contains("http.listen"), "{err}");
}

#[test]
fn a_busy_mqtt_port_is_named() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = bin();
    cmd.env("FLEET_HTTP__LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("FLEET_MQTT__LISTEN", format!("127.0.0.1:{port}"))
        .env("FLEET_DATABASE__URL", format!("sqlite://{}?mode=rwc", dir.path().join("f.db").display()));
    let (code, err) = run_to_end(cmd);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("127.0.0.1:{port}")) && err.contains("mqtt.listen"), "{err}");
}

#[test]
fn sigterm_stops_the_server_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let mut cmd = bin();
    cmd.current_dir(dir.path())
        .env("FLEET_HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env("FLEET_MQTT__LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("FLEET_DATABASE__URL", format!("sqlite://{}?mode=rwc", dir.path().join("f.db").display()))
        .env("FLEET_LOG__FORMAT", "json");
    let mut child = cmd.spawn().expect("spawn fleet-server");
    // Ready when /healthz answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", http)) {
            use std::io::Write;
            s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
            let mut resp = String::new();
            let _ = s.read_to_string(&mut resp);
            if resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "server did not answer /healthz");
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "exit {status:?}: {err}");
    assert!(err.contains("SIGTERM") && err.contains("\"stopped\""), "{err}");
    // No admin existed and none was configured: one was generated into a private file.
    let token_file = dir.path().join("lockerfleet-admin.token");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&token_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert!(std::fs::read_to_string(&token_file).unwrap().starts_with("lf_"));
    // JSON logs were asked for: every line parses.
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}
