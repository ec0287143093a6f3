//! A multi-tenant notes service on polymongo and axum: thousands of tenants, one pool.
//!
//! ```sh
//! cargo run -p polymongo-axum --example tenant-service                     # local test server
//! cargo run -p polymongo-axum --example tenant-service -- --uri mongodb://127.0.0.1:27017
//! curl -H 'X-Tenant: acme' -d '{"text":"hello"}' -H 'content-type: application/json' \
//!      http://127.0.0.1:3000/notes
//! ```
//!
//! See README.md beside this file.

mod app;

use polymongo_testkit::TestServer;

const USAGE: &str = "usage: tenant-service [--uri URI] [--addr HOST:PORT] [--pool-size N] \
                     [--domain DOMAIN] [--tenants NAME,NAME...] [--naive]";

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
