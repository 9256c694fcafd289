//! A TCP proxy standing in for a Kubernetes Service in fault tests: clients connect to
//! [`TcpProxy::addr`] and are forwarded to a target address that the test can change.
//!
//! [`TcpProxy::retarget`] is a Service's endpoint change after a failover: new connections go to
//! the new target, and every existing one is cut, as they are when the old pod dies.
//! [`TcpProxy::cut_all`] cuts without changing the target (the pod's network dropped every
//! connection). [`TcpProxy::pause`] is a partition: nothing more is forwarded either way, and new
//! connections are accepted (the kernel accepts them anyway) but get no answer, until
//! [`TcpProxy::resume`].
//!
//! Each connection belongs to the *generation* current when it was accepted. A cut ends a
//! generation: its connections are dropped (closed: the client reads EOF or its next write
//! fails) and the cut returns once all of them are gone, so nothing more of theirs reaches a
//! server after it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

/// A TCP proxy on 127.0.0.1; its tasks end when it is dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    state: Mutex<State>,
    /// True while paused: no byte is forwarded, no upstream connection is opened.
    paused: watch::Sender<bool>,
}

/// The target and the current generation, changed together so that a connection of a new
/// generation always sees the new target.
struct State {
    target: SocketAddr,
    generation: Generation,
}

struct Generation {
    /// Dropped to cut the generation: each connection's receiver then errors.
    cut: watch::Sender<()>,
    /// One clone per live connection; the receiver yields `None` once all are dropped.
    alive: mpsc::Sender<()>,
    gone: mpsc::Receiver<()>,
}

impl Generation {
    fn new() -> Generation {
        let (alive, gone) = mpsc::channel(1);
        Generation {
            cut: watch::Sender::new(()),
            alive,
            gone,
        }
    }
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `target`; panics
    /// with the reason if it cannot listen.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("proxy: listen on 127.0.0.1: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy: local address: {e}"));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                target,
                generation: Generation::new(),
            }),
            paused: watch::Sender::new(false),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        TcpProxy {
            addr,
            shared,
            accept,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where new connections go.
    pub fn target(&self) -> SocketAddr {
        self.shared.state().target
    }

    /// Sends new connections to `new` and cuts every existing one; returns once they are all
    /// closed.
    pub async fn retarget(&self, new: SocketAddr) {
        self.cut(Some(new)).await;
    }

    /// Cuts every existing connection (new ones still go to the same target); returns once they
    /// are all closed.
    pub async fn cut_all(&self) {
        self.cut(None).await;
    }

    /// Stops forwarding, both ways, on every connection, and leaves new ones unanswered, until
    /// [`TcpProxy::resume`]. Bytes already read when it is called may still be delivered.
    pub fn pause(&self) {
        self.shared.paused.send_replace(true);
    }

    /// Forwards again after [`TcpProxy::pause`].
    pub fn resume(&self) {
        self.shared.paused.send_replace(false);
    }

    async fn cut(&self, new_target: Option<SocketAddr>) {
        let old = {
            let mut state = self.shared.state();
            if let Some(target) = new_target {
                state.target = target;
            }
            std::mem::replace(&mut state.generation, Generation::new())
        };
        let Generation {
            cut,
            alive,
            mut gone,
        } = old;
        drop(cut);
        drop(alive);
        // `None` once every connection of the old generation has dropped its clone.
        let _ = gone.recv().await;
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // The connections' tasks live in the accept task's JoinSet, which aborts them as it goes.
        self.accept.abort();
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds a valid state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else {
                    // Out of file descriptors and the like: back off instead of spinning; the
                    // pending clients wait in the backlog.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let (target, cut, alive) = {
                    let state = shared.state();
                    (
                        state.target,
                        state.generation.cut.subscribe(),
                        state.generation.alive.clone(),
                    )
                };
                connections.spawn(connection(client, target, cut, alive, shared.clone()));
            }
            // Reaps finished connections, so the set does not grow with every one.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Forwards one connection until either side closes or its generation is cut. Holds `_alive`
/// until it ends, which is what a cut waits for.
async fn connection(
    client: TcpStream,
    target: SocketAddr,
    mut cut: watch::Receiver<()>,
    _alive: mpsc::Sender<()>,
    shared: Arc<Shared>,
) {
    let forward = async {
        wait_unpaused(&shared).await;
        // A target that refuses: the client is closed, as a Service without a ready endpoint
        // does.
        let Ok(upstream) = TcpStream::connect(target).await else {
            return;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (upstream_read, upstream_write) = upstream.into_split();
        tokio::join!(
            pump(client_read, upstream_write, &shared),
            pump(upstream_read, client_write, &shared),
        );
    };
    tokio::select! {
        _ = forward => {}
        // Errors when the generation's sender is dropped: the cut. Both sockets are dropped
        // (closed) with `forward`.
        _ = cut.changed() => {}
    }
}

/// Copies `from` to `to` until `from` ends (then shuts `to` down for writing, passing the
/// half-close on) or either fails; waits while the proxy is paused.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shared: &Shared) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        wait_unpaused(shared).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        wait_unpaused(shared).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

async fn wait_unpaused(shared: &Shared) {
    let mut paused = shared.paused.subscribe();
    // Errs only if the sender is gone, and `shared` holds it.
    let _ = paused.wait_for(|p| !*p).await;
}
