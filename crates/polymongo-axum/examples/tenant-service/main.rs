//! A multi-tenant notes service on polymongo and axum: thousands of tenants, one pool.
//!
//! ```sh
//! cargo run -p polymongo-axum --example tenant-service                     # local test server
//! cargo run -p polymongo-axum --example tenant-service -- --uri mongodb://127.0.0.1:27017
//! curl -H 'X-Tenant: acme' -d '{"text":"hello"}' -H 'content-type: application/json' \
//!      http://127.0.0.1:3000/notes
//! # load on two instances, tenant acme getting 80 % of it:
//! cargo run -p polymongo-axum --example tenant-service -- load \
//!      --target http://127.0.0.1:3000,http://127.0.0.1:3001 --hot acme
//! ```
//!
//! See README.md beside this file.

mod app;
mod load;

use std::time::Duration;

use polymongo_testkit::TestServer;

const USAGE: &str = "usage: tenant-service [--uri URI] [--addr HOST:PORT] [--pool-size N] \
                     [--domain DOMAIN] [--tenants NAME,NAME...] [--naive]
       tenant-service load [--target URL,URL...] [--tenants NAME,NAME...] [--hot NAME] \
                     [--hot-percent P] [--concurrency N] [--pause-ms MS] [--seconds S]";

/// `tenant-service load …`: the load generator's settings and how long to run (`None`: until
/// Ctrl-C).
fn parse_load_args(
    mut args: impl Iterator<Item = String>,
) -> Result<(load::LoadSettings, Option<Duration>), String> {
    let mut settings = load::LoadSettings::default();
    let mut seconds = None;
    let list = |v: String| -> Vec<String> {
        v.split(',')
            .map(|t| t.trim().trim_end_matches('/').to_owned())
            .filter(|t| !t.is_empty())
            .collect()
    };
    let number = |name: &str, v: String| -> Result<u64, String> {
        v.parse()
            .map_err(|_| format!("{name}: not a number\n{USAGE}"))
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--target" => settings.targets = list(value("--target")?),
            "--tenants" => settings.tenants = list(value("--tenants")?),
            "--hot" => settings.hot = value("--hot")?,
            "--hot-percent" => {
                settings.hot_percent =
                    number("--hot-percent", value("--hot-percent")?)?.min(100) as u32
            }
            "--concurrency" => {
                settings.concurrency = number("--concurrency", value("--concurrency")?)? as usize
            }
            "--pause-ms" => {
                settings.pause = Duration::from_millis(number("--pause-ms", value("--pause-ms")?)?)
            }
            "--seconds" => {
                seconds = Some(Duration::from_secs(number(
                    "--seconds",
                    value("--seconds")?,
                )?))
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if settings.targets.is_empty() {
        return Err(format!("--target needs at least one URL\n{USAGE}"));
    }
    if !settings.tenants.contains(&settings.hot) {
        settings.tenants.push(settings.hot.clone());
    }
    Ok((settings, seconds))
}

/// Runs the load generator until `--seconds` pass or Ctrl-C, then prints what it sent.
async fn load_main(args: impl Iterator<Item = String>) {
    let (settings, seconds) = match parse_load_args(args) {
        Ok(s) => s,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    eprintln!(
        "load on {} ({} % for {}); Ctrl-C to stop",
        settings.targets.join(", "),
        settings.hot_percent,
        settings.hot
    );
    let stop = async move {
        match seconds {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let report = load::run(settings, stop).await;
    println!(
        "sent {} ok, {} failed; by tenant: {:?}",
        report.ok, report.failed, report.by_tenant
    );
}

fn parse_args() -> Result<(app::Settings, bool), String> {
    let mut settings = app::Settings {
        uri: std::env::var("MONGODB_URI").unwrap_or_default(),
        addr: "127.0.0.1:3000".to_owned(),
        naive: false,
        pool_size: 10,
        domain: "localhost".to_owned(),
        tenants: app::DEFAULT_TENANTS.map(str::to_owned).to_vec(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--uri" => settings.uri = value("--uri")?,
            "--addr" => settings.addr = value("--addr")?,
            "--domain" => settings.domain = value("--domain")?,
            "--tenants" => {
                settings.tenants = value("--tenants")?
                    .split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect()
            }
            "--pool-size" => {
                settings.pool_size = value("--pool-size")?
                    .parse()
                    .map_err(|_| format!("--pool-size: not a number\n{USAGE}"))?
            }
            "--naive" => settings.naive = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let needs_server = settings.uri.is_empty();
    Ok((settings, needs_server))
}

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("load") {
        load_main(std::env::args().skip(2)).await;
        return;
    }
    let (mut settings, needs_server) = match parse_args() {
        Ok(s) => s,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    // Without a URI, a local test server (mongod on PATH, else nx-27017) lives as long as we do.
    let _server = if needs_server {
        match TestServer::start().await {
            Ok(server) => {
                eprintln!(
                    "no --uri or MONGODB_URI: started a local test server at {}",
                    server.uri()
                );
                settings.uri = server.uri().to_owned();
                Some(server)
            }
            Err(e) => {
                eprintln!("cannot start a local test server: {e}");
                std::process::exit(1);
            }
        }
    } else {
        None
    };
    if let Err(e) = app::run(settings).await {
        eprintln!("tenant-service: {e}");
        std::process::exit(1);
    }
}
