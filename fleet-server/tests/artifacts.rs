//! OTA artifacts with the real release tool: `fleet-server artifact keygen | sign | upload`
//! against a running server, then downloads as a cabinet makes them (`Range` to resume,
//! `ETag`, immutable caching), and every way an upload can be wrong.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::process::Command;

use common::{Backend, Fixture};
use serde_json::{Value, json};

backend_tests!(a_release_is_signed_uploaded_and_served_with_ranges, bad_releases_are_refused_and_never_served);

fn tool(args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_fleet-server")).arg("artifact").args(args).output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A release key, a release file and its signed manifest, made with the tool.
fn release(dir: &Path, version: &str, bytes: &[u8]) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let key = dir.join(format!("release-{version}.key"));
    let keygen: Value = serde_json::from_str(&tool(&["keygen", "--out", key.to_str().unwrap()]).unwrap()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(tool(&["keygen", "--out", key.to_str().unwrap()]).unwrap_err().contains("exists"), "never overwritten");
    let file = dir.join(format!("edge-agent-{version}.img"));
    std::fs::write(&file, bytes).unwrap();
    let manifest = dir.join(format!("edge-agent-{version}.manifest.json"));
    let signed = tool(&[
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--file",
        file.to_str().unwrap(),
        "--version",
        version,
        "--hardware",
        "lf-cab-sim,lf-cab-2",
        "--security-floor",
        "1.0.0",
        "--notes",
        "fixes the door sensor debounce",
    ])
    .unwrap();
    std::fs::write(&manifest, signed).unwrap();
    (keygen["public_key"].as_str().unwrap().to_owned(), file, manifest)
}

async fn raw(
    ts: &common::TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, awc::http::header::HeaderMap, Vec<u8>) {
    let mut req = awc::Client::default().get(format!("{}{path}", ts.base));
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut res = req.send().await.unwrap();
    let body = res.body().limit(1 << 24).await.unwrap().to_vec();
    (res.status().as_u16(), res.headers().clone(), body)
}

async fn a_release_is_signed_uploaded_and_served_with_ranges(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (public, file, manifest) = release(dir.path(), "1.4.0", &bytes);
    let mut config = fx.config();
    config.artifacts.dir = dir.path().join("store");
    config.artifacts.trusted_keys = vec![public];
    let ts = fx.start(config).await;

    // The tool runs beside the server, off this test's runtime (which serves it).
    let args: Vec<String> = ["upload", "--server", &ts.base, "--token", &ts.token, "--manifest"]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([manifest.display().to_string(), "--file".into(), file.display().to_string()])
        .collect();
    let out = actix_rt::task::spawn_blocking(move || tool(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap()
        .unwrap();
    let uploaded: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(uploaded["uploaded"], true, "{uploaded}");
    assert_eq!(uploaded["version"], "1.4.0");
    assert_eq!(uploaded["release_notes"], "fixes the door sensor debounce");
    assert_eq!(uploaded["hardware"], json!(["lf-cab-sim", "lf-cab-2"]));
    let sha = uploaded["sha256"].as_str().unwrap().to_owned();
    assert!(uploaded["url"].as_str().unwrap().ends_with(&format!("/ota/{sha}")));
    let (_, listed) = ts.get("/api/v1/artifacts").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);

    // The whole file, with a validator and immutable caching.
    let path = format!("/ota/{sha}");
    let (status, headers, body) = raw(&ts, &path, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body, bytes);
    let etag = headers.get("etag").unwrap().to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{sha}\""));
    assert_eq!(headers.get("accept-ranges").unwrap(), "bytes");
    assert!(headers.get("cache-control").unwrap().to_str().unwrap().contains("immutable"));
    // A download resumed after 100,000 bytes.
    let (status, headers, body) = raw(&ts, &path, &[("range", "bytes=100000-"), ("if-range", &etag)]).await;
    assert_eq!(status, 206);
    assert_eq!(headers.get("content-range").unwrap(), "bytes 100000-299999/300000");
    assert_eq!(body, bytes[100_000..]);
    let (status, _, body) = raw(&ts, &path, &[("range", "bytes=10-19")]).await;
    assert_eq!((status, body.as_slice()), (206, &bytes[10..20]));
    // A stale validator gets the whole file; an unsatisfiable range is named.
    let (status, _, body) = raw(&ts, &path, &[("range", "bytes=10-19"), ("if-range", "\"other\"")]).await;
    assert_eq!((status, body.len()), (200, bytes.len()));
    let (status, headers, _) = raw(&ts, &path, &[("range", "bytes=300000-")]).await;
    assert_eq!(status, 416);
    assert_eq!(headers.get("content-range").unwrap(), "bytes */300000");
    let (status, _, body) = raw(&ts, &path, &[("if-none-match", &etag)]).await;
    assert_eq!((status, body.len()), (304, 0));
    assert_eq!(raw(&ts, &format!("/ota/{}", "0".repeat(64)), &[]).await.0, 404);
    assert!(ts.metric("lockerfleet_artifacts_total{outcome=\"served_range\"}").await >= 2.0);
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn bad_releases_are_refused_and_never_served(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let good = b"release image 2.0.0".repeat(1000);
    let (public, file, manifest) = release(dir.path(), "2.0.0", &good);
    let (_, _, foreign_manifest) = release(dir.path(), "2.0.1", b"signed by a key nobody trusts");
    let mut config = fx.config();
    config.artifacts.dir = dir.path().join("store");
    config.artifacts.trusted_keys = vec![public];
    let ts = fx.start(config).await;
    let signed: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();

    // A manifest signed by an untrusted key, or altered after signing.
    let foreign: Value = serde_json::from_slice(&std::fs::read(&foreign_manifest).unwrap()).unwrap();
    let (status, body) = ts.post("/api/v1/artifacts", &foreign).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("signature")), "{body}");
    let mut altered = signed.clone();
    altered["manifest"]["security_floor"] = json!("0.0.1");
    let (status, body) = ts.post("/api/v1/artifacts", &altered).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("does not verify"), "{body}");

    // Only fleet-level release managers register releases.
    ts.create_tenant("acme").await;
    for (role, tenant) in [("auditor", Some("acme")), ("admin", Some("acme"))] {
        let token = ts.make_token(role, tenant, None).await;
        let (status, _) = ts.request("POST", "/api/v1/artifacts", Some(&token), Some(&signed)).await;
        assert_eq!(status, 403, "{role} {tenant:?}");
    }

    // The right manifest, but the wrong bytes: refused, kept out of /ota.
    let (status, created) = ts.post("/api/v1/artifacts", &signed).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(ts.post("/api/v1/artifacts", &signed).await.0, 409, "one artifact per sha256");
    let id = created["id"].as_str().unwrap();
    let sha = created["sha256"].as_str().unwrap();
    let mut tampered = good.clone();
    tampered[100] ^= 1;
    let put = |body: Vec<u8>| {
        let url = format!("{}/api/v1/artifacts/{id}/content", ts.base);
        let token = ts.token.clone();
        async move {
            let mut res = awc::Client::default().put(url).bearer_auth(token).send_body(body).await.unwrap();
            let v: Value = res.json().await.unwrap_or(Value::Null);
            (res.status().as_u16(), v)
        }
    };
    let (status, body) = put(tampered).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("sha256"), "{body}");
    let (status, body) = put([good.as_slice(), b"trailing"].concat()).await;
    assert_eq!(status, 422);
    assert!(body["error"]["message"].as_str().unwrap().contains("longer"), "{body}");
    assert_eq!(raw(&ts, &format!("/ota/{sha}"), &[]).await.0, 404, "nothing unverified is served");
    assert!(ts.metric("lockerfleet_artifacts_total{outcome=\"refused\"}").await >= 2.0);
    // No stray partial files stay behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("store")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The right bytes, at last.
    let (status, body) = put(std::fs::read(&file).unwrap()).await;
    assert_eq!((status, &body["uploaded"]), (200, &json!(true)), "{body}");
    assert_eq!(raw(&ts, &format!("/ota/{sha}"), &[]).await.2, good);
    ts.server.stop().await;
    fx.cleanup().await;
}
