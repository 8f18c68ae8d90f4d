//! `simulator`: virtual cabinets against a fleet-server, and the benchmarks.
//!
//! Today one benchmark: `simulator bench-ingest`, durable event ingest (MQTT in →
//! committed → acked), measured end to end with real cabinets' traffic shape: each
//! virtual cabinet publishes journal batches on its `up` topic and counts the acks on its
//! `down` topic. It starts a fleet-server in-process on the database and broker given, so
//! one command reproduces a row of BENCHMARKS.md.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use lockerfleet_shared::envelope::{CabinetEvent, DownBody, EventBatch, EventKind, UpBody, decode};
use lockerfleet_shared::{CabinetId, Envelope, TopicSpace};
use rumqttc::{Event, MqttOptions, Packet, QoS};
use serde_json::json;
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
#[command(version, about = "Lockerfleet simulator and benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run N virtual cabinets against a fleet-server: register, connect, drive parcels
    /// through them (assignment, courier deposit, code pickup) and report.
    Run(Box<simulator::fleet::FleetArgs>),
    /// Durable ingest: events/s from publish to ack, through an in-process fleet-server.
    BenchIngest {
        /// `sqlite` (a fresh file) or a `postgres://` URL (a fresh database is made in it).
        #[arg(long, default_value = "sqlite")]
        db: String,
        /// `embedded` (rumqttd in-process) or `mqtt://host:port`.
        #[arg(long, default_value = "embedded")]
        broker: String,
        #[arg(long, default_value_t = 50)]
        cabinets: usize,
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Events per `events` message.
        #[arg(long, default_value_t = 50)]
        batch: usize,
    },
}

const TOKEN: &str = "lf_simulator-bench-admin-token-0000";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,rumqttd=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let system = actix_rt::System::new();
    system.block_on(async move {
        match cli.command {
            Command::Run(args) => {
                let report = simulator::fleet::run(&args).await?;
                let text = serde_json::to_string_pretty(&report)?;
                if let Some(path) = &args.report {
                    std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
                }
                if let Some(path) = &args.plot {
                    std::fs::write(path, simulator::plot::html(&report))
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                #[allow(clippy::print_stdout)] // the report is the command's output
                {
                    println!("{text}");
                }
                if let Some(r) = &report.rollout {
                    eprint!("{}", r.summary());
                }
                if report.events_lost > 0 || report.events_duplicated > 0 || !report.errors.is_empty() {
                    bail!("the run lost or duplicated events, or had errors (see the report)");
                }
                Ok(())
            }
            Command::BenchIngest { db, broker, cabinets, events, batch } => {
                bench_ingest(&db, &broker, cabinets, events, batch).await
            }
        }
    })
}

async fn bench_ingest(db: &str, broker: &str, cabinets: usize, events: usize, batch: usize) -> anyhow::Result<()> {
    if cabinets == 0 || batch == 0 || events < cabinets {
        bail!("need at least one cabinet, one event per cabinet and a batch of at least one");
    }
    let dir = tempfile::tempdir()?;
    let mut config = fleet_server::config::Config::default();
    config.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.auth.bootstrap_token = Some(TOKEN.into());
    config.log.level = "warn".into();
    config.mqtt.namespace = Some(format!("bench{}", uuid::Uuid::new_v4().simple()));
    let (db_label, cleanup) = if db == "sqlite" {
        config.database.url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
        ("sqlite".to_owned(), None)
    } else if db.starts_with("postgres") {
        let name = format!("lf_bench_{}", uuid::Uuid::new_v4().simple());
        let admin = fleet_server::store::Store::connect_raw(db).await.context("connect to PostgreSQL")?;
        admin.execute_sql(&format!("CREATE DATABASE {name}")).await?;
        let (base, _) = db.rsplit_once('/').context("a postgres URL has a database path")?;
        config.database.url = format!("{base}/{name}");
        ("postgresql".to_owned(), Some((admin, name)))
    } else {
        bail!("--db is `sqlite` or a postgres:// URL");
    };
    let broker_label = if broker == "embedded" {
        config.mqtt.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        "rumqttd (embedded)".to_owned()
    } else {
        config.mqtt.mode = fleet_server::config::BrokerMode::External;
        config.mqtt.url = Some(broker.to_owned());
        format!("external {broker}")
    };
    let topics = config.topics();
    let server = fleet_server::start(config).await?;
    let http = awc::Client::default();
    let base = format!("http://{}/api/v1", server.http_addr);
    post(&http, &format!("{base}/tenants"), json!({"id": "bench", "name": "bench"})).await?;
    for i in 0..cabinets {
        let key = lockerfleet_shared::seal::CabinetKeyPair::generate().public().to_base64();
        post(
            &http,
            &format!("{base}/cabinets"),
            json!({"id": format!("b-{i:05}"), "tenant": "bench", "public_key": key, "compartments": [{"id": "A1", "size": "m"}]}),
        )
        .await?;
    }

    // Connect every cabinet first, so the measured time is ingest only.
    let per_cabinet = events / cabinets;
    let total = per_cabinet * cabinets;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<usize>();
    let mut starters = Vec::new();
    for i in 0..cabinets {
        let id = CabinetId::new(format!("b-{i:05}"))?;
        let (start_tx, start_rx) = tokio::sync::oneshot::channel::<()>();
        starters.push(start_tx);
        let ready = cabinet(
            id,
            topics.clone(),
            server.mqtt_host.clone(),
            server.mqtt_port,
            per_cabinet,
            batch,
            start_rx,
            done_tx.clone(),
        )
        .await?;
        ready.await.context("a cabinet did not connect")?;
    }
    let started = Instant::now();
    for s in starters {
        let _ = s.send(());
    }
    let mut acked = 0;
    let mut finished = 0;
    while finished < cabinets {
        match tokio::time::timeout(Duration::from_secs(120), done_rx.recv()).await {
            Ok(Some(n)) => {
                acked += n;
                finished += 1;
            }
            _ => bail!("timed out with {acked} of {total} events acked"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let stored = server.store.count_cabinet_events().await?;
    let result = json!({
        "benchmark": "ingest", "database": db_label, "broker": broker_label,
        "cabinets": cabinets, "events": total, "batch": batch,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "events_per_second": (total as f64 / secs).round(),
        "stored": stored, "acked": acked,
    });
    #[allow(clippy::print_stdout)] // the JSON result is the command's output
    {
        println!("{result}");
    }
    if stored != total as u64 || acked != total {
        bail!("lost or duplicated events: stored {stored}, acked {acked}, sent {total}");
    }
    server.stop().await;
    if let Some((admin, name)) = cleanup {
        let _ = admin.execute_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    }
    Ok(())
}

async fn post(http: &awc::Client, url: &str, body: serde_json::Value) -> anyhow::Result<()> {
    let mut res =
        http.post(url).bearer_auth(TOKEN).send_json(&body).await.map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    if !res.status().is_success() {
        let text = res.body().await.unwrap_or_default();
        bail!("{url}: {} {}", res.status(), String::from_utf8_lossy(&text));
    }
    Ok(())
}

/// One virtual cabinet: connects, waits for the start signal, publishes its events in
/// batches, and reports how many were acked once all were.
#[allow(clippy::too_many_arguments)]
async fn cabinet(
    id: CabinetId,
    topics: TopicSpace,
    host: String,
    port: u16,
    events: usize,
    batch: usize,
    start: tokio::sync::oneshot::Receiver<()>,
    done: mpsc::UnboundedSender<usize>,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<()>> {
    let mut opts = MqttOptions::new(format!("bench-{id}-{}", uuid::Uuid::new_v4().simple()), host, port);
    opts.set_keep_alive(Duration::from_secs(30)).set_inflight(100).set_max_packet_size(1 << 20, 1 << 20);
    // Without Nagle's delay, as the server's and the agents' own clients.
    let (client, mut eventloop) = fleet_server::broker::BrokerLink::client(opts, 1024);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let down = topics.cabinet_down(&id);
    let up = topics.cabinet_up(&id);
    client.subscribe(down, QoS::AtLeastOnce).await?;
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Vec<uuid::Uuid>>();
    actix_rt::spawn(async move {
        let mut ready = Some(ready_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(env) = decode::<DownBody>(&p.payload, 8 << 20)
                        && let DownBody::Ack(a) = env.body
                    {
                        let _ = ack_tx.send(a.events);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    actix_rt::spawn(async move {
        if start.await.is_err() {
            return;
        }
        let mut sent = HashSet::with_capacity(events);
        let mut seq = 0u64;
        for chunk_start in (0..events).step_by(batch) {
            let n = batch.min(events - chunk_start);
            let evs: Vec<CabinetEvent> = (0..n)
                .map(|_| {
                    seq += 1;
                    let e = CabinetEvent {
                        id: uuid::Uuid::now_v7(),
                        seq,
                        at: chrono::Utc::now(),
                        what: EventKind::Alarm { code: "bench".into(), detail: "ingest benchmark".into() },
                    };
                    sent.insert(e.id);
                    e
                })
                .collect();
            let env = Envelope::new(id.clone(), seq, UpBody::Events(EventBatch { events: evs }));
            if client.publish(up.clone(), QoS::AtLeastOnce, false, env.encode()).await.is_err() {
                return;
            }
        }
        let mut acked = 0;
        while acked < events {
            match ack_rx.recv().await {
                Some(ids) => acked += ids.iter().filter(|i| sent.remove(i)).count(),
                None => break,
            }
        }
        let _ = done.send(acked);
    });
    Ok(ready_rx)
}
