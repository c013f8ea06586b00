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

    shutdown_signal().await;
    tracing::info!("shutting down");
    proxy.stop_accepting().await;
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
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

pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops understudy");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
