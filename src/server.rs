//! `mgpass serve`: builds the [`App`], starts the HTTPS listener, the admin socket and
//! the outbox worker, and shuts down cleanly on SIGINT/SIGTERM.

use crate::app::{App, StartError};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::http::tls;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A running server, for tests and embedding.
pub struct Server {
    pub app: Arc<App>,
    pub addr: SocketAddr,
    pub cert_path: std::path::PathBuf,
    /// Where metrics are served, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
    /// The admin socket and the outbox worker: stopped at shutdown so the store closes.
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Starts everything on `listener` (bind it to port 0 in tests).
    pub async fn start(
        config: Config,
        clock: SharedClock,
        listener: TcpListener,
    ) -> Result<Server, StartError> {
        let (cert, key) = tls::cert_paths(&config).map_err(|e| StartError(e.to_string()))?;
        let (tls_config, fingerprint) =
            tls::server_config(&cert, &key).map_err(|e| StartError(e.to_string()))?;
        tracing::info!(cert = %cert.display(), sha256 = %fingerprint, "TLS certificate");
        let grace = config.shutdown.grace;
        let socket_path = config.admin_socket_path();
        let app = App::open(config, clock)?;
        let admin = crate::admin::socket::bind(&socket_path)
            .map_err(|e| StartError(format!("admin socket {}: {e}", socket_path.display())))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError(e.to_string()))?;
        let mut background = vec![
            tokio::spawn(crate::admin::socket::serve(app.clone(), admin)),
            tokio::spawn(crate::outbox::run(app.clone())),
            tokio::spawn(janitor(app.clone())),
        ];
        let mut metrics_addr = None;
        if let Some(addr) = app.config.metrics_listen {
            let metrics = TcpListener::bind(addr)
                .await
                .map_err(|e| StartError(format!("metrics_listen: cannot bind {addr}: {e}")))?;
            metrics_addr = metrics.local_addr().ok();
            tracing::info!(%addr, "metrics listening");
            background.push(tokio::spawn(crate::metrics::serve(app.clone(), metrics)));
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let served = app.clone();
        let done = tokio::spawn(async move {
            crate::http::serve(
                served.clone(),
                listener,
                tls_config,
                async {
                    let _ = stopped.await;
                },
                grace,
            )
            .await;
            if let Err(e) = served.store.flush().await {
                tracing::error!(error = %e, "final flush failed");
            }
            let _ = std::fs::remove_file(served.config.admin_socket_path());
        });
        tracing::info!(%addr, issuer = %app.config.issuer, "mgpass listening");
        Ok(Server {
            app,
            addr,
            cert_path: cert,
            metrics_addr,
            stop: Some(stop),
            done,
            background,
        })
    }

    /// Stops accepting, lets in-flight requests finish (bounded), flushes the store.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.done).await;
        for task in &self.background {
            task.abort();
        }
        for task in self.background.drain(..) {
            let _ = task.await;
        }
    }
}

/// How often the janitor sweeps, and how long delivery records are kept for the admin
/// delivery log.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(600);
const KEEP_DELIVERIES_SECS: i64 = 7 * 24 * 3600;

/// Removes expired sessions, codes, tokens and old delivery records, now and then.
async fn janitor(app: Arc<App>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        let sweeping = app.clone();
        let result = tokio::task::spawn_blocking(move || {
            sweeping
                .store
                .sweep(sweeping.clock.now(), KEEP_DELIVERIES_SECS)
        })
        .await;
        match result {
            Ok(Ok(report)) => tracing::info!(?report, "janitor swept the store"),
            Ok(Err(e)) => tracing::error!(error = %e, "janitor failed"),
            Err(e) => tracing::error!(error = %e, "janitor task failed"),
        }
    }
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(config: Config, clock: SharedClock) -> Result<(), StartError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError(format!("listen: cannot bind {}: {e}", config.listen)))?;
    let server = Server::start(config, clock, listener).await?;
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| StartError(e.to_string()))?;
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| StartError(e.to_string()))?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("SIGINT received");
                break;
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM received");
                break;
            }
            _ = hangup.recv() => {
                tracing::info!("SIGHUP received: reloading plugins");
                if let Err(e) = crate::admin::reload_plugins(&server.app).await {
                    tracing::error!(error = %e, "plugin reload failed; the old plugins keep serving");
                }
            }
        }
    }
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
