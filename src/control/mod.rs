//! The control plane server (`skiff server`): the ECS user API and the agent protocol
//! (src/proto) over HTTPS, state in memory written through a durable store.

mod agent_api;
mod ecs;
mod ecs_instances;
mod ecs_tasks;
pub mod error;
mod http;
mod model;
mod state;
pub mod store;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use model::now;
use model::{JoinToken, KIND_JOIN_TOKEN, KIND_TASK};
use store::Write;

/// How long a STOPPED task stays describable (ECS keeps them about an hour).
pub const STOPPED_TASK_RETENTION: Duration = Duration::from_secs(3600);
/// A TLS handshake that takes longer than this is dropped (slow or stuck clients).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

pub struct ServerOptions {
    pub data_dir: PathBuf,
    pub listen: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_sans: Vec<String>,
    /// The heartbeat timeout's base (it grows with the fleet: see `State::heartbeat_timeout`).
    pub heartbeat_timeout: Duration,
}

/// Raises the soft open-files limit to the hard one: each agent holds a connection.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

/// Prepares everything (files, store, certificate) and serves until SIGINT or SIGTERM.
pub async fn serve(opts: ServerOptions) -> Result<(), ControlError> {
    let dir = &opts.data_dir;
    let dir_err = |source| ControlError::DataDir {
        path: dir.display().to_string(),
        source,
    };
    // Made 0700 when new; an existing directory keeps its mode (it may be shared).
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(dir_err)?;
    }
    let nofile = raise_nofile_limit();
    let (admin, _) = tls::token_file(&dir.join("admin.token"), "ska_")?;
    let (join, _) = tls::token_file(&dir.join("join.token"), "skj_")?;
    let mut sans = opts.tls_sans.clone();
    if let Some((host, _)) = opts.listen.rsplit_once(':') {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if !host.is_empty() && host != "0.0.0.0" && host != "::" {
            sans.push(host.to_string());
        }
    }
    let identity = tls::identity(&tls::TlsOptions {
        data_dir: dir.clone(),
        cert: opts.tls_cert.clone(),
        key: opts.tls_key.clone(),
        sans,
    })?;
    let store = store::SqliteStore::open(&dir.join("skiff.db"))?;
    let mut st = state::State::load(Box::new(store), opts.heartbeat_timeout)?;
    // join.token is the default cluster's: its hash goes to the store on first start (or
    // again if the file was replaced by hand).
    let h = tls::hash_secret(&join);
    if !st.join_tokens.contains_key(&h) {
        let t = JoinToken {
            hash: h.clone(),
            cluster: "default".into(),
            created_at: now(),
        };
        st.commit(vec![Write::put(KIND_JOIN_TOKEN, &h, &t)])?;
        st.join_tokens.insert(h, t);
    }
    let shared = Arc::new(http::Shared {
        state: Mutex::new(st),
        admin_hash: tls::hash_secret(&admin),
    });
    let listener =
        TcpListener::bind(&opts.listen)
            .await
            .map_err(|source| ControlError::Listen {
                addr: opts.listen.clone(),
                source,
            })?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|source| ControlError::Listen {
            addr: opts.listen.clone(),
            source,
        })?;
    if let Some(fp) = &identity.ca_fingerprint {
        std::fs::write(dir.join("ca.sha256"), format!("{fp}\n")).map_err(dir_err)?;
        println!("ca fingerprint (sha256): {fp}");
    }
    println!(
        "skiff server listening on https://{addr} (data {}, open files {nofile})",
        dir.display()
    );
    tokio::spawn(sweep(shared.clone()));
    let app = http::router(shared);
    let acceptor = TlsAcceptor::from(identity.config);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(dir_err)?;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors, most likely: let connections close first.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let svc = TowerToHyperService::new(app);
            // The timer makes hyper's 30 s limit on reading a request's headers effective, so
            // a client that trickles bytes cannot hold a connection forever.
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

/// Removes STOPPED tasks older than the retention, once a minute.
async fn sweep(app: Arc<http::Shared>) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let app = app.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut s = app.lock();
            let limit = now() - STOPPED_TASK_RETENTION.as_secs_f64();
            let old: Vec<String> = s
                .tasks
                .values()
                .filter(|t| t.is_stopped() && t.stopped_at.unwrap_or(t.created_at) < limit)
                .map(|t| t.id.clone())
                .collect();
            if old.is_empty() {
                return;
            }
            let batch = old.iter().map(|id| Write::delete(KIND_TASK, id)).collect();
            match s.commit(batch) {
                Ok(()) => old.iter().for_each(|id| s.remove_task_mem(id)),
                Err(e) => tracing::warn!("removing stopped tasks: {e}"),
            }
        })
        .await;
    }
}
