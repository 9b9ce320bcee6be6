//! A TCP proxy that a test puts between a server and PostgreSQL, and then breaks: it
//! cuts every open link at once, delays what passes, refuses new connections for a
//! while, or lets one statement through and loses PostgreSQL's answer to it. Faults of
//! the network, not of PostgreSQL, so the database keeps its state and the test can
//! check what the server made of them.
//!
//! A link is a pair of copy loops (client to upstream and back); cutting it drops both
//! sockets, so each side sees its connection end mid-conversation.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy on 127.0.0.1; it stops (and drops its links) when dropped.
pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    acceptor: JoinHandle<()>,
}

struct Shared {
    upstream: SocketAddr,
    /// Added before each chunk is passed on, in either direction (microseconds).
    delay_us: AtomicU64,
    refusing: AtomicBool,
    /// Bumped by each cut; every link ends when it changes.
    cuts: watch::Sender<u64>,
    /// Bytes that, among an execution's parameters, make its link lose the answer
    /// (one-shot).
    trap: Mutex<Option<Vec<u8>>>,
    open: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
    lost_replies: AtomicU64,
}

/// What a proxy has seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections passed on to PostgreSQL.
    pub accepted: u64,
    /// Connections closed at once while refusing.
    pub refused: u64,
    /// Links open now.
    pub open: usize,
    /// Answers lost by [`Proxy::lose_reply_after`].
    pub lost_replies: u64,
}

/// Which way a copy loop passes bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToPostgres,
    ToClient,
}

impl Proxy {
    /// A proxy to `upstream` (host and port of the PostgreSQL server).
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            upstream,
            delay_us: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            cuts: watch::channel(0).0,
            trap: Mutex::new(None),
            open: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            lost_replies: AtomicU64::new(0),
        });
        let acceptor = tokio::spawn(accept(listener, shared.clone()));
        Ok(Self {
            port,
            shared,
            acceptor,
        })
    }

    /// Ends every open link at once; returns how many there were.
    pub fn cut_all(&self) -> usize {
        let open = self.shared.open.load(Ordering::SeqCst);
        self.shared.cuts.send_modify(|generation| *generation += 1);
        open
    }

    /// Delays every chunk passed on from now on by `delay` (zero: none), so a round trip
    /// costs at least twice that.
    pub fn set_delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared.delay_us.store(micros, Ordering::SeqCst);
    }

    /// While set, new connections are accepted and closed at once, before PostgreSQL
    /// answers them (open links are left alone: see [`Self::cut_all`]).
    pub fn refuse_new(&self, refuse: bool) {
        self.shared.refusing.store(refuse, Ordering::SeqCst);
    }

    /// The next statement executed with `pattern` among its parameters runs, and the
    /// link it ran on is cut when PostgreSQL answers, the answer lost: the statement ran
    /// (and, outside a transaction, committed), the client never learns it. One-shot.
    ///
    /// sqlx executes a prepared statement with one write of Bind (which carries the
    /// parameters, text as is), Execute, Close and Sync, and waits for the answer before
    /// it sends anything else on that connection: a chunk that starts with Bind and holds
    /// `pattern` is such an execution, and the next bytes back are its answer. The client
    /// must not use TLS (`sslmode=disable`), or the proxy cannot see the parameters.
    pub fn lose_reply_after(&self, pattern: &[u8]) {
        *self.shared.trap.lock().unwrap_or_else(|e| e.into_inner()) = Some(pattern.to_vec());
    }

    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            accepted: self.shared.accepted.load(Ordering::SeqCst),
            refused: self.shared.refused.load(Ordering::SeqCst),
            open: self.shared.open.load(Ordering::SeqCst),
            lost_replies: self.shared.lost_replies.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.shared.cuts.send_modify(|generation| *generation += 1);
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if shared.refusing.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            drop(client);
            continue;
        }
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(link(client, shared.clone()));
    }
}

/// Passes bytes both ways until either side closes or the link is cut.
async fn link(client: TcpStream, shared: Arc<Shared>) {
    // Subscribed before connecting upstream, so a cut from now on ends this link.
    let mut cut = shared.cuts.subscribe();
    let Ok(upstream) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    shared.open.fetch_add(1, Ordering::SeqCst);
    // Set when this link passed on the trapped execution: its answer is lost.
    let trapped = AtomicBool::new(false);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    tokio::select! {
        () = pump(client_read, upstream_write, &shared, &trapped, Direction::ToPostgres) => {}
        () = pump(upstream_read, client_write, &shared, &trapped, Direction::ToClient) => {}
        _ = cut.changed() => {}
    }
    // Both sockets are dropped here: each side sees its connection end.
    shared.open.fetch_sub(1, Ordering::SeqCst);
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
    trapped: &AtomicBool,
    direction: Direction,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &buffer[..n];
        match direction {
            Direction::ToPostgres if chunk.first() == Some(&b'B') => {
                let mut trap = shared.trap.lock().unwrap_or_else(|e| e.into_inner());
                if trap.as_deref().is_some_and(|p| contains(chunk, p)) {
                    *trap = None;
                    // Marked before it is passed on, so that its answer cannot slip
                    // through.
                    trapped.store(true, Ordering::SeqCst);
                }
            }
            Direction::ToClient if trapped.load(Ordering::SeqCst) => {
                shared.lost_replies.fetch_add(1, Ordering::SeqCst);
                return;
            }
            _ => {}
        }
        let delay = shared.delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
