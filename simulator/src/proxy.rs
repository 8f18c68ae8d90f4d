//! A TCP proxy that can cut the network: the simulator's partition.
//!
//! ```text
//!   cabinets ──► 127.0.0.1:<proxy> ──► broker
//!                     │
//!                  cut():  every open connection is dropped, new ones are closed at once
//!                  heal(): connections pass again (the agents reconnect on their own backoff)
//! ```
//!
//! Cutting drops the TCP connections without an MQTT DISCONNECT, as a dead mobile link
//! does, so the broker publishes each cabinet's last will and the agents journal what
//! happens meanwhile.

use std::net::SocketAddr;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; it stops when dropped.
#[derive(Debug)]
pub struct CutProxy {
    /// Where cabinets connect.
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    accept: actix_rt::task::JoinHandle<()>,
    /// Connections let through so far.
    passed: std::rc::Rc<std::cell::Cell<usize>>,
}

impl CutProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, watch) = watch::channel(false);
        let passed = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let counted = passed.clone();
        let accept = actix_rt::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { continue };
                if *watch.borrow() {
                    drop(inbound);
                    continue;
                }
                counted.set(counted.get() + 1);
                let mut cut = watch.clone();
                actix_rt::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                    let mut inbound = inbound;
                    // As the agents' own sockets: small MQTT packets go out at once.
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    tokio::select! {
                        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Ok(Self { addr, cut, accept, passed })
    }

    /// Connections it has let through (each reconnect of a cabinet is one more).
    pub fn connections(&self) -> usize {
        self.passed.get()
    }

    /// Drops every connection and refuses new ones until [`CutProxy::heal`].
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }

    pub fn heal(&self) {
        let _ = self.cut.send(false);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
