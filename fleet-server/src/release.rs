//! `fleet-server artifact keygen | sign | upload`: the release manager's side of OTA.
//!
//! * `keygen` writes an Ed25519 release key (mode 0600) and prints its public half for
//!   `artifacts.trusted_keys` on the server and the cabinets' trusted keys;
//! * `sign` describes a file (size, sha256, version, hardware, floor, notes) and signs
//!   the manifest;
//! * `upload` registers the signed manifest with a server and streams the file to it.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;
use lockerfleet_shared::artifact::{self, SignedManifest, Version};
use sha2::{Digest, Sha256};

#[derive(Debug, clap::Subcommand)]
pub enum ArtifactCommand {
    /// Create a release signing key.
    Keygen {
        /// Where to write the private key (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a release file; prints the signed manifest (JSON).
    Sign {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value = "edge-agent")]
        name: String,
        #[arg(long)]
        version: String,
        /// Hardware models it runs on (repeat, or comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        hardware: Vec<String>,
        /// Cabinets that install it refuse anything older than this afterwards.
        #[arg(long)]
        security_floor: String,
        #[arg(long, default_value = "")]
        notes: String,
    },
    /// Register a signed manifest with a server and upload its file.
    Upload {
        /// The server's base URL, e.g. http://127.0.0.1:8080
        #[arg(long)]
        server: String,
        /// An API token allowed to manage releases.
        #[arg(long, env = "LOCKERFLEET_TOKEN")]
        token: String,
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long)]
        file: PathBuf,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Reads a release key written by `keygen` (base64 of the 32-byte Ed25519 secret).
pub fn load_key(path: &Path) -> Result<SigningKey, String> {
    let raw = zeroize::Zeroizing::new(read(path)?);
    let text = std::str::from_utf8(&raw).map_err(|_| format!("{} is not a release key", path.display()))?;
    let bytes = zeroize::Zeroizing::new(
        B64.decode(text.trim()).map_err(|_| format!("{} is not a base64 release key", path.display()))?,
    );
    let secret: [u8; 32] =
        bytes.as_slice().try_into().map_err(|_| format!("{} does not hold a 32-byte key", path.display()))?;
    Ok(SigningKey::from_bytes(&secret))
}

/// Runs one artifact command; returns what to print.
pub async fn run(cmd: ArtifactCommand) -> Result<String, String> {
    match cmd {
        ArtifactCommand::Keygen { out } => {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
            let secret = zeroize::Zeroizing::new(B64.encode(key.to_bytes()));
            std::io::Write::write_all(&mut f, secret.as_bytes()).map_err(|e| e.to_string())?;
            f.sync_all().map_err(|e| e.to_string())?;
            let public = key.verifying_key();
            Ok(serde_json::json!({
                "public_key": B64.encode(public.as_bytes()),
                "key_id": artifact::key_id(&public),
                "private_key_file": out,
            })
            .to_string())
        }
        ArtifactCommand::Sign { key, file, name, version, hardware, security_floor, notes } => {
            version.parse::<Version>().map_err(|e| format!("--version: {e}"))?;
            security_floor.parse::<Version>().map_err(|e| format!("--security-floor: {e}"))?;
            let key = load_key(&key)?;
            // Hash the file as a stream: release images can be large.
            let mut f = std::fs::File::open(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let mut hasher = Sha256::new();
            let size =
                std::io::copy(&mut f, &mut hasher).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let manifest = artifact::ArtifactManifest {
                name,
                version,
                hardware,
                size,
                sha256: hex::encode(hasher.finalize()),
                security_floor,
                created_at: chrono::Utc::now(),
                release_notes: notes,
            };
            serde_json::to_string_pretty(&artifact::sign(manifest, &key)).map_err(|e| e.to_string())
        }
        ArtifactCommand::Upload { server, token, manifest, file } => {
            let signed: SignedManifest = serde_json::from_slice(&read(&manifest)?)
                .map_err(|e| format!("{} is not a signed manifest: {e}", manifest.display()))?;
            let body = read(&file)?;
            artifact::check_bytes(&signed.manifest, &body).map_err(|e| format!("{}: {e}", file.display()))?;
            let base = server.trim_end_matches('/');
            let http = awc::Client::builder().timeout(std::time::Duration::from_secs(600)).finish();
            let fail = |what: &str, e: String| format!("{what}: {e}");
            let mut res = http
                .post(format!("{base}/api/v1/artifacts"))
                .bearer_auth(&token)
                .send_json(&signed)
                .await
                .map_err(|e| fail("registering the manifest", e.to_string()))?;
            let created: serde_json::Value = res.json().await.map_err(|e| fail("reading the answer", e.to_string()))?;
            if !res.status().is_success() {
                return Err(format!("the server refused the manifest ({}): {created}", res.status()));
            }
            let id = created["id"].as_str().ok_or("the server's answer has no id")?.to_owned();
            let mut res = http
                .put(format!("{base}/api/v1/artifacts/{id}/content"))
                .bearer_auth(&token)
                .content_type("application/octet-stream")
                .send_body(body)
                .await
                .map_err(|e| fail("uploading the file", e.to_string()))?;
            let done: serde_json::Value =
                res.json().limit(1 << 20).await.map_err(|e| fail("reading the answer", e.to_string()))?;
            if !res.status().is_success() {
                return Err(format!("the server refused the file ({}): {done}", res.status()));
            }
            Ok(done.to_string())
        }
    }
}
