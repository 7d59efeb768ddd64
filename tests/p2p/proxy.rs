//! A TCP proxy for tests: forwards to one target with a fixed one-way delay in each direction,
//! counts the bytes it carries, and can cut every link (and refuse new ones) until restored.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Shared state of one proxy.
#[derive(Default)]
struct State {
    /// Bytes carried from the target to the dialler.
    from_target: AtomicU64,
    /// Bytes carried from the dialler to the target.
    to_target: AtomicU64,
    /// Whether links are cut.
    cut: AtomicBool,
    /// Tasks of the live links, aborted by a cut.
    links: Mutex<Vec<JoinHandle<()>>>,
}

/// A running proxy; dropping it stops accepting.
pub struct Proxy {
    /// Where to connect to reach the target through the proxy.
    pub addr: SocketAddr,
    /// Counters and links, shared with the tasks.
    state: Arc<State>,
    /// The accept loop, stopped on drop.
    acceptor: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on 127.0.0.1 in front of `target`.
    pub async fn start(target: SocketAddr, one_way_delay: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(State::default());
        let shared = state.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if shared.cut.load(Relaxed) {
                    drop(inbound);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                let mut links = shared.links.lock().await;
                links.extend(pump(
                    in_read,
                    out_write,
                    one_way_delay,
                    shared.clone(),
                    true,
                ));
                links.extend(pump(
                    out_read,
                    in_write,
                    one_way_delay,
                    shared.clone(),
                    false,
                ));
            }
        });
        Proxy {
            addr,
            state,
            acceptor,
        }
    }

    /// Bytes carried from the target towards the dialler so far.
    pub fn bytes_from_target(&self) -> u64 {
        self.state.from_target.load(Relaxed)
    }

    /// Bytes carried from the dialler to the target so far.
    #[allow(dead_code)]
    pub fn bytes_to_target(&self) -> u64 {
        self.state.to_target.load(Relaxed)
    }

    /// Cuts every link and refuses new ones until [`Proxy::restore`].
    pub async fn cut(&self) {
        self.state.cut.store(true, Relaxed);
        for link in self.state.links.lock().await.drain(..) {
            link.abort();
        }
    }

    /// Accepts links again.
    pub fn restore(&self) {
        self.state.cut.store(false, Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        if let Ok(mut links) = self.state.links.try_lock() {
            for link in links.drain(..) {
                link.abort();
            }
        }
    }
}

/// Copies one direction: a reader task timestamps chunks, a writer task delivers each one
/// `delay` after it was read. Returns both tasks.
fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    state: Arc<State>,
    to_target: bool,
) -> [JoinHandle<()>; 2] {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            let counter = if to_target {
                &state.to_target
            } else {
                &state.from_target
            };
            counter.fetch_add(chunk.len() as u64, Relaxed);
        }
        let _ = to.shutdown().await;
    });
    [reader, writer]
}
