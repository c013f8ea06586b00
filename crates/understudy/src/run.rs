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
    let admin = admin::serve(config.admin.listen, admin_state)
        .await
        .map_err(|e| CliError::Other(format!("cannot listen on {} for the admin endpoint: {e} (change admin.listen or --admin-listen)", config.admin.listen)))?;
    let admin_addr = admin.addr;
    tracing::info!(proxy = %proxy.local_addr(), admin = %admin_addr, "understudy running");
    println!(
        "ready: proxy on {}, admin on http://{admin_addr}",
        proxy.local_addr()
    );

    let (tls, rules) = (proxy.tls_reloader(), proxy.rules());
    until_stopped(|| reload(&tls, &rules)).await;
    shut_down(proxy, config.proxy.shutdown_grace()).await;
    admin.close().await;
    Ok(())
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

/// What SIGHUP does: reloads the TLS certificate and the rules file,
/// logging the outcome. A file that does not load leaves the previous
/// certificate or rules in force; sessions take new rules up at their next
/// statement.
pub fn reload(tls: &understudy_proxy::tls::ClientTls, rules: &understudy_proxy::rules::Rules) {
    match tls.reload() {
        Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; the previous one stays in use")
        }
    }
    if !rules.configured() {
        return;
    }
    match rules.reload() {
        Ok(count) => tracing::info!(rules = count, "SIGHUP: rules reloaded"),
        Err(e) => {
            tracing::error!("SIGHUP: rules not reloaded, the previous ones stay in force: {e}")
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
