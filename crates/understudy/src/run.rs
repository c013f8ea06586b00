//! `understudy run --config FILE`: the proxy alone, in front of existing
//! servers; the primary is found by [`discovery`](crate::discovery).

use std::sync::Arc;

use understudy_config::Config;
use understudy_proxy::topology;

use crate::admin::{self, AdminState, NodesFn};
use crate::cli::RunArgs;
use crate::{discovery, CliError};

/// Runs until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> Result<(), CliError> {
    let mut config = Config::load(&args.config, std::env::vars())?;
    if let Some(rules) = &args.rules {
        config.proxy.rules = rules.display().to_string();
    }
    if let Some(listen) = args.listen {
        config.proxy.listen = listen;
    }
    if let Some(listen) = args.admin_listen {
        config.admin.listen = listen;
    }
    config.validate()?;
    let config = Arc::new(config);

    let (topology_tx, topology_rx) = topology::channel(Default::default());
    let observed = discovery::spawn(Arc::clone(&config), topology_tx);
    let proxy = understudy_proxy::start(Arc::clone(&config), topology_rx).await?;
    reload_rules_on_sighup(proxy.rules());

    let servers = config.servers.clone();
    let nodes: NodesFn = Arc::new(move || {
        let observed = Arc::clone(&observed);
        let servers = servers.clone();
        Box::pin(async move { observed.reports(&servers) })
    });
    let admin_state = Arc::new(AdminState {
        proxy_port: proxy.local_addr().port(),
        metrics: proxy.metrics(),
        nodes,
        token: config.admin.token.expose().to_owned(),
        extra_metrics: Some({
            let commit_log = proxy.commit_log();
            Arc::new(move |out: &mut String| commit_log.render_prometheus(out))
        }),
        failover: None,
        switchover: None,
        rules: proxy.rules(),
        holds: proxy.holds(),
    });
    let admin_addr = admin::serve(config.admin.listen, admin_state)
        .await
        .map_err(|e| CliError::Other(format!("cannot listen on {} for the admin endpoint: {e} (change admin.listen or --admin-listen)", config.admin.listen)))?;
    tracing::info!(proxy = %proxy.local_addr(), admin = %admin_addr, "understudy running");
    println!(
        "ready: proxy on {}, admin on http://{admin_addr}",
        proxy.local_addr()
    );

    let tls = proxy.tls_reloader();
    until_stopped(|| reload_tls(&tls)).await;
    shut_down(proxy, config.proxy.shutdown_grace()).await;
    Ok(())
}

/// Reloads the rules file on every SIGHUP; sessions take the new rules up
/// at their next statement, and a file that does not load leaves the rules
/// in force (the error is logged).
pub fn reload_rules_on_sighup(rules: std::sync::Arc<understudy_proxy::rules::Rules>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: rules are not reloaded on signal");
        return;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match rules.reload() {
                Ok(count) => tracing::info!(rules = count, "rules reloaded"),
                Err(e) => {
                    tracing::error!("rules not reloaded, the previous ones stay in force: {e}")
                }
            }
        }
    });
}

/// Runs until SIGINT (Ctrl-C) or SIGTERM, calling `on_reload` at each SIGHUP.
pub async fn until_stopped(mut on_reload: impl FnMut()) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(term), Ok(hup)) => (term, hup),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM and SIGHUP; only Ctrl-C stops understudy");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => on_reload(),
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (SIGHUP is ignored).
pub async fn shutdown_signal() {
    until_stopped(|| {}).await
}

/// Reloads the TLS certificate, logging the outcome.
pub fn reload_tls(tls: &understudy_proxy::tls::ClientTls) {
    match tls.reload() {
        Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; the previous one stays in use")
        }
    }
}

/// Stops the proxy gracefully (see [`ProxyHandle::shutdown`]) and logs how.
///
/// [`ProxyHandle::shutdown`]: understudy_proxy::ProxyHandle::shutdown
pub async fn shut_down(proxy: understudy_proxy::ProxyHandle, grace: std::time::Duration) {
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: no new connections; sessions end at their next transaction boundary"
    );
    let report = proxy.shutdown(grace).await;
    tracing::info!(
        sessions = report.open_at_start,
        ended_in_transaction = report.ended_by_grace,
        left_open = report.left_open,
        took_ms = report.took.as_millis() as u64,
        "proxy stopped"
    );
}
