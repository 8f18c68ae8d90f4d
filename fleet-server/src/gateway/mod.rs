//! The embedded broker's front door: the MQTT listener cabinets and couriers reach, in
//! front of rumqttd, which only listens on loopback inside the process.
//!
//! rumqttd 0.20 can check a login at CONNECT but cannot authorise a PUBLISH or SUBSCRIBE
//! per topic, so this small proxy does it:
//!
//! ```text
//!  cabinet ──TLS/TCP──► front door ──TCP (127.0.0.1, ephemeral port)──► rumqttd
//!                        │ CONNECT: login checked against the issued credentials
//!                        │          (in memory), last will checked, client id scoped
//!                        │ client → broker: PUBLISH / SUBSCRIBE checked (acl.rs),
//!                        │          every allowed packet forwarded byte for byte
//!                        │ broker → client: passed through
//!  server link, outbox, probe ───────────────────────────────────────► rumqttd directly
//! ```
//!
//! A refused SUBSCRIBE is answered here with a SUBACK of failure codes (0x80) and never
//! reaches the broker; a refused PUBLISH ends the connection (MQTT 3.1.1 has no negative
//! PUBACK, and a cabinet that writes outside its topics is not one to keep talking to).
//! Both are counted (`lockerfleet_mqtt_packets_denied_total`) and logged; refused
//! connects are counted by reason (`lockerfleet_mqtt_connects_refused_total`).
//!
//! The client id a confined login sends is forwarded as `{username}:{client id}`, so a
//! cabinet cannot take over (or kick off) another cabinet's session by naming its id.
//!
//! Memory per connection: the task (~1.5 KiB), two read buffers that hold only a packet
//! under way and are freed when empty, the two sockets, and, with TLS, rustls' session.
//! Measured with 2,000 idle connections (debug build, RSS of the whole process): rumqttd
//! alone ~43 KiB per connection; through the front door ~46.5 KiB on plain TCP (~3 KiB
//! for the front door) and ~56.5 KiB over TLS (rustls keeps a 4 KiB read buffer, keys and
//! record state per session).

pub mod acl;
pub mod credentials;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lockerfleet_shared::TopicSpace;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Publish, SubAck, Subscribe, SubscribeReasonCode};
use rumqttc::mqttbytes::{self, FixedHeader, PacketType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::metrics::Metrics;
use credentials::{Credentials, Principal};

/// How long a new connection may take to finish TLS and send its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes asked for when nothing of the next packet is known yet: enough for a fixed
/// header and a small packet. Once the header says how long the packet is, exactly that
/// much is reserved; a buffer left empty is freed, so an idle connection holds almost none.
const READ_CHUNK: usize = 128;
/// Packets from the broker (the server's own, trusted) may be as large as the largest
/// payload the configuration allows.
const MAX_DOWN_PACKET: usize = 64 * 1024 * 1024 + 64 * 1024;

/// What the front door needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Present: only TLS is spoken on the listener.
    pub tls: Option<Arc<ServerConfig>>,
    /// Refuse a CONNECT without a login. When false (loopback only), a client without a
    /// login is let through unconfined, as on a plain local broker.
    pub require_auth: bool,
    /// rumqttd's internal address.
    pub upstream: SocketAddr,
    pub topics: TopicSpace,
    /// Largest packet a client may send (its remaining length), bytes.
    pub max_packet_bytes: usize,
    /// Most client connections at once; more are closed at accept (kept inside rumqttd's
    /// own limit, which it enforces by crashing: upstream issue #1062).
    pub max_connections: usize,
}

/// Starts accepting on `listener` (already bound, so a busy port is reported before
/// anything else starts). Runs until `stop` turns true.
pub fn spawn(
    listener: std::net::TcpListener,
    settings: Settings,
    credentials: Credentials,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let addr = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    tracing::info!(%addr, tls = settings.tls.is_some(), require_auth = settings.require_auth, "MQTT front door listening");
    if settings.tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "MQTT front door without TLS on a network address: logins and traffic travel in clear text (set mqtt.tls_cert and mqtt.tls_key)");
    }
    let ctx = Rc::new(Ctx { acceptor: settings.tls.clone().map(TlsAcceptor::from), settings, credentials, metrics });
    actix_rt::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => return,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::error!(error = %e, "MQTT front door cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                ctx.refused("capacity");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let ctx = ctx.clone();
            actix_rt::spawn(async move {
                ctx.metrics.mqtt_front_door_connections.inc();
                if let Err(refusal) = ctx.accept(stream).await {
                    ctx.refused(refusal.reason);
                    tracing::info!(%peer, reason = refusal.reason, detail = %refusal.detail, "MQTT connect refused");
                }
                ctx.metrics.mqtt_front_door_connections.dec();
                drop(slot);
            });
        }
    });
    Ok(addr)
}

/// Shared by every connection of one front door.
struct Ctx {
    settings: Settings,
    acceptor: Option<TlsAcceptor>,
    credentials: Credentials,
    metrics: Metrics,
}

/// Why a connection ended before it was proxied; `reason` is the metric label.
#[derive(Debug)]
struct Refusal {
    reason: &'static str,
    detail: String,
}

fn refusal(reason: &'static str, detail: impl std::fmt::Display) -> Refusal {
    Refusal { reason, detail: detail.to_string() }
}

/// Who is on the other end, once CONNECT is through.
#[derive(Debug, Clone)]
enum Access {
    /// No login, on a listener that does not require one.
    Unconfined,
    Confined(Principal),
}

impl Ctx {
    fn refused(&self, reason: &'static str) {
        self.metrics.mqtt_connects_refused.with_label_values(&[reason]).inc();
    }

    fn denied(&self, packet: &'static str, reason: &'static str) {
        self.metrics.mqtt_packets_denied.with_label_values(&[packet, reason]).inc();
    }

    async fn accept(&self, stream: TcpStream) -> Result<(), Refusal> {
        // Boxed, so that each connection's task holds only the state of the path it takes
        // (a plain connection does not carry room for a TLS session, nor the handshake's
        // state for the rest of its life).
        match &self.acceptor {
            None => Box::pin(self.serve(stream)).await,
            Some(acceptor) => {
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, Box::pin(acceptor.accept(stream)))
                    .await
                    .map_err(|_| refusal("timeout", "no TLS handshake"))?
                    .map_err(|e| refusal("tls", e))?;
                Box::pin(self.serve(tls)).await
            }
        }
    }

    /// CONNECT, then the two directions until either side closes.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, mut client: S) -> Result<(), Refusal> {
        let mut inbox = BytesMut::new();
        let max = self.settings.max_packet_bytes;
        let first = tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut client, &mut inbox, max))
            .await
            .map_err(|_| refusal("timeout", "no CONNECT"))?
            .map_err(|e| refusal("malformed", e))?
            .ok_or_else(|| refusal("not_connect", "closed before CONNECT"))?;
        let (header, frame) = first;
        if !matches!(header.packet_type(), Ok(PacketType::Connect)) {
            return Err(refusal("not_connect", format!("first packet is {:?}", header.packet_type())));
        }
        let mut connect = Connect::read(header, frame).map_err(|e| refusal("malformed", e))?;
        let access = match connect.login.take() {
            Some(login) => match self.credentials.verify(&login.username, login.password.as_bytes()) {
                Ok(p) => Access::Confined(p),
                Err(e) => {
                    send_connack(&mut client, ConnectReturnCode::BadUserNamePassword).await;
                    return Err(refusal(e.label(), format!("username {:?}: {e}", login.username)));
                }
            },
            None if self.settings.require_auth => {
                send_connack(&mut client, ConnectReturnCode::NotAuthorized).await;
                return Err(refusal("anonymous", "no username and password"));
            }
            None => Access::Unconfined,
        };
        if let Access::Confined(who) = &access {
            if let Some(will) = &connect.last_will
                && let Err(d) = acl::may_publish(who, &self.settings.topics, &will.topic)
            {
                send_connack(&mut client, ConnectReturnCode::NotAuthorized).await;
                return Err(refusal(
                    "will_outside_acl",
                    format!("{}: last will on {:?} ({})", who.username(), will.topic, d.label()),
                ));
            }
            connect.client_id = format!("{}:{}", who.username(), connect.client_id);
        }
        let kind = match &access {
            Access::Unconfined => "anonymous",
            Access::Confined(Principal::Cabinet(_)) => "cabinet",
            Access::Confined(Principal::Courier(_)) => "courier",
        };

        let upstream =
            match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(self.settings.upstream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    send_connack(&mut client, ConnectReturnCode::ServiceUnavailable).await;
                    return Err(refusal("broker_unavailable", e));
                }
                Err(_) => {
                    send_connack(&mut client, ConnectReturnCode::ServiceUnavailable).await;
                    return Err(refusal("broker_unavailable", "timeout"));
                }
            };
        let _ = upstream.set_nodelay(true);
        let (up_read, mut up_write) = upstream.into_split();
        let mut encoded = BytesMut::with_capacity(connect.size() + 8);
        connect.write(&mut encoded).map_err(|e| refusal("malformed", e))?;
        up_write.write_all(&encoded).await.map_err(|e| refusal("broker_unavailable", e))?;
        drop(encoded);
        self.metrics.mqtt_logins.with_label_values(&[kind]).inc();

        let (client_read, client_write) = tokio::io::split(client);
        let client_write = Mutex::new(client_write);
        let up = self.client_to_broker(client_read, inbox, up_write, &client_write, &access);
        let down = broker_to_client(up_read, &client_write);
        tokio::pin!(down);
        let ended = tokio::select! {
            r = up => match r {
                // The client closed: pass the close on (dropping the write half sends FIN)
                // and let the broker finish — after a DISCONNECT it must not publish the
                // last will, which a reset connection would make it do.
                Ok(broker_write) => {
                    drop(broker_write);
                    match tokio::time::timeout(CONNECT_TIMEOUT, &mut down).await {
                        Ok(r) => r.map_err(|e| format!("broker side: {e}")),
                        Err(_) => Err("the broker did not close after the client".into()),
                    }
                }
                Err(e) => Err(e),
            },
            r = &mut down => r.map_err(|e| format!("broker side: {e}")),
        };
        if let Err(why) = ended {
            tracing::debug!(login = kind, %why, "MQTT connection ended");
        }
        Ok(())
    }

    /// Reads the client's packets, checks them, forwards the allowed ones unchanged.
    async fn client_to_broker<R, W>(
        &self,
        mut client: R,
        mut inbox: BytesMut,
        mut broker: tokio::net::tcp::OwnedWriteHalf,
        client_write: &Mutex<W>,
        access: &Access,
    ) -> Result<tokio::net::tcp::OwnedWriteHalf, String>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let max = self.settings.max_packet_bytes;
        loop {
            let Some((header, frame)) = read_frame(&mut client, &mut inbox, max).await.map_err(|e| match e {
                FrameError::Mqtt(_) => {
                    self.denied("any", "malformed");
                    format!("client sent a malformed packet: {e}")
                }
                FrameError::Io(_) => format!("client side: {e}"),
            })?
            else {
                return Ok(broker);
            };
            if let Access::Confined(who) = access {
                match header.packet_type() {
                    Ok(PacketType::Publish) => {
                        let publish = Publish::read(header, frame.clone()).map_err(|e| {
                            self.denied("publish", "malformed");
                            format!("malformed PUBLISH: {e}")
                        })?;
                        if let Err(d) = acl::may_publish(who, &self.settings.topics, &publish.topic) {
                            self.denied("publish", d.label());
                            tracing::warn!(login = %who.username(), topic = %publish.topic, reason = d.label(),
                                "MQTT publish outside the login's topics; disconnecting");
                            return Err("publish refused".into());
                        }
                    }
                    Ok(PacketType::Subscribe) => {
                        let subscribe = Subscribe::read(header, frame.clone()).map_err(|e| {
                            self.denied("subscribe", "malformed");
                            format!("malformed SUBSCRIBE: {e}")
                        })?;
                        let refused = subscribe.filters.iter().find_map(|f| {
                            acl::may_subscribe(who, &self.settings.topics, &f.path).err().map(|d| (f, d))
                        });
                        if let Some((filter, d)) = refused {
                            // All or nothing: a SUBSCRIBE naming any filter outside the ACL
                            // is refused as a whole.
                            self.denied("subscribe", d.label());
                            tracing::info!(login = %who.username(), filter = %filter.path, reason = d.label(),
                                "MQTT subscribe outside the login's topics refused");
                            let codes = vec![SubscribeReasonCode::Failure; subscribe.filters.len()];
                            let mut out = BytesMut::with_capacity(8 + codes.len());
                            SubAck::new(subscribe.pkid, codes).write(&mut out).map_err(|e| e.to_string())?;
                            write_to(client_write, &out).await.map_err(|e| format!("client side: {e}"))?;
                            continue;
                        }
                    }
                    Ok(PacketType::Connect) => {
                        self.denied("connect", "not_permitted");
                        return Err("a second CONNECT".into());
                    }
                    _ => {}
                }
            }
            broker.write_all(&frame).await.map_err(|e| format!("broker side: {e}"))?;
            drop(frame);
            shrink(&mut inbox);
        }
    }
}

/// Passes the broker's packets to the client, whole packets at a time (so a SUBACK the
/// front door writes never lands inside one).
async fn broker_to_client<W: AsyncWrite + Unpin>(
    mut broker: tokio::net::tcp::OwnedReadHalf,
    client_write: &Mutex<W>,
) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    loop {
        if buf.capacity() == buf.len() {
            buf.reserve(READ_CHUNK);
        }
        if broker.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let mut complete = 0;
        loop {
            match mqttbytes::check(buf[complete..].iter(), MAX_DOWN_PACKET) {
                Ok(header) => complete += header.frame_length(),
                Err(mqttbytes::Error::InsufficientBytes(need)) => {
                    buf.reserve(need.max(READ_CHUNK));
                    break;
                }
                Err(e) => return Err(std::io::Error::other(format!("broker sent a malformed packet: {e}"))),
            }
        }
        if complete > 0 {
            let out = buf.split_to(complete);
            write_to(client_write, &out).await?;
        }
        shrink(&mut buf);
    }
}

async fn write_to<W: AsyncWrite + Unpin>(w: &Mutex<W>, bytes: &[u8]) -> std::io::Result<()> {
    let mut w = w.lock().await;
    w.write_all(bytes).await?;
    w.flush().await
}

/// Gives an empty buffer's memory back.
fn shrink(buf: &mut BytesMut) {
    if buf.is_empty() {
        *buf = BytesMut::new();
    }
}

/// Why a client's bytes are not MQTT.
#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("{0}")]
    Mqtt(mqttbytes::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The next whole packet (its fixed header and all its bytes), or `None` at end of stream.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<(FixedHeader, Bytes)>, FrameError> {
    loop {
        match mqttbytes::check(buf.iter(), max) {
            Ok(header) => return Ok(Some((header, buf.split_to(header.frame_length()).freeze()))),
            Err(mqttbytes::Error::InsufficientBytes(need)) => {
                buf.reserve(need.max(READ_CHUNK));
                if r.read_buf(buf).await? == 0 {
                    return Ok(None);
                }
            }
            Err(e) => return Err(FrameError::Mqtt(e)),
        }
    }
}

/// Tells a refused client why, best effort (it may already be gone).
async fn send_connack<S: AsyncWrite + Unpin>(client: &mut S, code: ConnectReturnCode) {
    let mut out = BytesMut::with_capacity(4);
    if ConnAck::new(code, false).write(&mut out).is_ok() {
        let _ = client.write_all(&out).await;
        let _ = client.flush().await;
        let _ = client.shutdown().await;
    }
}
