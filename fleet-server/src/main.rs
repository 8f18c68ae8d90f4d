//! `fleet-server`: start the server, or check a configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fleet_server::config::{Config, LogFormat};

#[derive(Debug, Parser)]
#[command(version, about = "Lockerfleet fleet-server")]
struct Cli {
    /// TOML configuration file (default: ./fleet-server.toml if present). Environment
    /// variables FLEET_<SECTION>__<KEY> override it.
    #[arg(long, short, global = true, env = "FLEET_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Load and validate the configuration, print it, and exit.
    CheckConfig,
    /// OTA release tools: keygen, sign, upload.
    #[command(subcommand)]
    Artifact(fleet_server::release::ArtifactCommand),
    /// Print every issued cabinet and courier MQTT login as Mosquitto `password_file`
    /// lines (`username:$7$…`), for an external Mosquitto with the shipped ACL. Add the
    /// server's own login with `mosquitto_passwd`, then send Mosquitto SIGHUP.
    MqttPasswd {
        /// Print instead the `acl_file` entries confining each issued courier login to
        /// its own assignment topic (append them to the shipped ACL).
        #[arg(long)]
        acl: bool,
    },
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() -> std::io::Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT"),
        _ = term.recv() => Ok("SIGTERM"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Artifact(cmd)) = cli.command {
        // Release tools need no server configuration.
        let out = actix_rt::System::new().block_on(fleet_server::release::run(cmd));
        return match out {
            Ok(text) => {
                #[allow(clippy::print_stdout)] // the tool's result is its output
                {
                    println!("{text}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fleet-server artifact: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fleet-server: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::MqttPasswd { acl }) = cli.command {
        let out = actix_rt::System::new().block_on(async {
            let store =
                fleet_server::store::Store::connect(&config.database.url, 1).await.map_err(|e| e.to_string())?;
            let lines = if acl {
                fleet_server::gateway::credentials::mosquitto_courier_acl(&store, &config.topics()).await
            } else {
                fleet_server::gateway::credentials::mosquitto_password_file(&store).await
            };
            lines.map_err(|e| e.to_string())
        });
        return match out {
            Ok(lines) => {
                #[allow(clippy::print_stdout)] // the password file is the tool's output
                {
                    print!("{lines}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fleet-server mqtt-passwd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::CheckConfig) = cli.command {
        match toml_like(&config) {
            Ok(s) => eprintln!("{s}"),
            Err(e) => eprintln!("fleet-server: {e}"),
        }
        eprintln!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    let system = actix_rt::System::new();
    let result: anyhow::Result<()> = system.block_on(async move {
        let server = fleet_server::start(config).await?;
        let signal = shutdown_signal().await?;
        tracing::info!(signal, "signal received");
        server.stop().await;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "fleet-server failed");
            eprintln!("fleet-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn toml_like(config: &Config) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&config.redacted())
}
