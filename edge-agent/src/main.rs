//! `edge-agent`: run a cabinet, or provision its key.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edge_agent::config::AgentConfig;

#[derive(Debug, Parser)]
#[command(version, about = "Lockerfleet edge agent (one per cabinet)")]
struct Cli {
    /// The cabinet's TOML configuration; EDGE_<SECTION>__<KEY> variables override it.
    #[arg(long, short, global = true, env = "EDGE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the cabinet (the default).
    Run,
    /// Create the cabinet's key pair (once) and print the registration request for
    /// `POST /api/v1/cabinets` (add the tenant).
    Provision,
    /// Make a recipient's face template from a photo and seal it for one cabinet and one
    /// parcel; prints the sealed template for `POST /api/v1/parcels/{id}/sealed-template`.
    Enrol(edge_agent::cli::EnrolArgs),
    /// Choose the match threshold: from genuine and impostor score files, or from a
    /// folder of labelled photos (one folder per person); prints FAR/FRR with
    /// confidence bounds and the thresholds for each gallery size.
    Calibrate(edge_agent::cli::CalibrateArgs),
    /// Measure frame → decision latency of the cabinet's matcher (benchmarks).
    BenchDecision(edge_agent::cli::BenchDecisionArgs),
}

/// Prints a tool's output on stdout, or its error on stderr.
fn report(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(out) => {
            #[allow(clippy::print_stdout)] // the tool's result is its output
            {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("edge-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The face tools work on photos and models, with or without a cabinet configuration.
    match &cli.command {
        Some(Command::Enrol(args)) => return report(edge_agent::cli::enrol(cli.config.as_deref(), args)),
        Some(Command::Calibrate(args)) => return report(edge_agent::cli::calibrate(cli.config.as_deref(), args)),
        Some(Command::BenchDecision(args)) => {
            return report(edge_agent::cli::bench_decision(cli.config.as_deref(), args));
        }
        _ => {}
    }
    let config = match AgentConfig::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("edge-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    if let Some(Command::Provision) = cli.command {
        return match edge_agent::provision(&config) {
            Ok(req) => {
                #[allow(clippy::print_stdout)] // the registration request is the command's output
                {
                    println!("{req:#}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("edge-agent: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let system = actix::System::new();
    let result: Result<(), String> = system.block_on(async move {
        // Simulated hardware until a board driver is configured.
        let agent =
            edge_agent::start(&config, Box::new(edge_agent::hw::SimLock::default())).map_err(|e| e.to_string())?;
        let addr = edge_agent::http::serve(config.http_listen, agent.cabinet.clone(), config.sim_control)
            .map_err(|e| format!("cannot listen on {} (http_listen): {e}", config.http_listen))?;
        tracing::info!(%addr, sim_control = config.sim_control, "cabinet endpoint listening");
        // Under systemd (Type=notify): ready now, then watchdog pings while the actors answer.
        let notifier = edge_agent::sdnotify::Notifier::from_env().map_err(|e| e.to_string())?.map(std::sync::Arc::new);
        if let Some(n) = &notifier {
            n.notify_or_log("READY=1");
            if let Some(every) = edge_agent::sdnotify::watchdog_interval() {
                let (cabinet, link) = (agent.cabinet.clone(), agent.link.clone());
                edge_agent::sdnotify::spawn_watchdog(n.clone(), every, move || {
                    let (cabinet, link) = (cabinet.clone(), link.clone());
                    async move { edge_agent::sdnotify::actors_answer(&cabinet, &link, every).await }
                });
            }
        }
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(|e| e.to_string())?,
            _ = term.recv() => {}
        }
        if let Some(n) = &notifier {
            n.notify_or_log("STOPPING=1");
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
