//! The `rusher` binary: parse flags, start the server, drain on SIGTERM/SIGINT.

use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use rusher_server::config::{load_secret, Cli, Command};
use rusher_server::{auth, server, sys};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Token { user, ttl, secret, secret_file, geo_move, geo_admin, operator }) =
        cli.command
    {
        let key = load_secret(secret.as_deref(), secret_file.as_deref())?
            .context("no secret configured: set RUSHER_SECRET or --secret-file")?;
        let grants = auth::Grants { geo_move, geo_admin, operator };
        let token = auth::mint_with(&key, &user, &grants, Duration::from_secs(ttl), SystemTime::now())
            .map_err(|e| anyhow::anyhow!("cannot mint a token for {user:?}: {e}"))?;
        println!("{token}");
        return Ok(());
    }

    let cfg = cli.serve.resolve()?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cfg.log).context("bad --log filter")?)
        .with_writer(std::io::stderr)
        .init();

    match sys::raise_nofile_limit() {
        Ok(n) => tracing::info!(open_files = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
    if let Some(s) = &cfg.static_files {
        tracing::info!(dir = %s.root().display(), files = s.len(), bytes = s.bytes(), "serving static files at /");
    }
    if cfg.token_key.is_none() {
        tracing::warn!(
            "no secret configured: open development mode, any client may connect and choose its name"
        );
    }
    if cfg.autobahn_echo {
        tracing::warn!("the /autobahn echo endpoint is enabled: for conformance tests only");
    }
    tracing::info!(workers = cfg.workers, store = %rusher_server::store::redact_url(&cfg.store_url), "starting");
    if let Some(c) = &cfg.cluster {
        if cfg.store_url.starts_with("sqlite:") {
            tracing::warn!(
                "cluster mode on a SQLite file: every node must share one store, give them PostgreSQL"
            );
        }
        tracing::info!(redis = %rusher_server::cluster::redact(&c.url), timeout_secs = c.timeout.as_secs(), "cluster mode");
    }

    let mut signals = Signals::new([SIGINT, SIGTERM]).context("cannot install signal handlers")?;
    let running = server::start(cfg).context("cannot start")?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "rusher listening on http://{}", running.addr)?;
    stdout.flush()?;
    match &running.node {
        Some(node) => tracing::info!(addr = %running.addr, node = %node, "listening as a cluster node"),
        None => tracing::info!(addr = %running.addr, "listening"),
    }

    if let Some(sig) = signals.forever().next() {
        tracing::info!(
            signal = sig,
            "draining: no new connections, closing clients with 1001, flushing storage"
        );
    }
    running.shutdown();
    tracing::info!("stopped");
    Ok(())
}
