//! Graceful shutdown: close on SIGINT/SIGTERM/SIGUSR2 within a deadline, let work in flight
//! finish, refuse new work, then exit with the conventional status.
//!
//! The example sends itself SIGTERM after a few writes, so it ends by itself; in a service,
//! the signal comes from Ctrl-C, the container runtime or the process manager.
//!
//! Uses `MONGODB_URI` when it is set; otherwise starts a local test server.
//!
//! ```text
//! cargo run --example graceful_shutdown; echo "exit status $?"
//! ```

use std::time::Duration;

use polymongo::{Error, Model, PolyMongo};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Event {
    n: u64,
}
impl Model for Event {
    const COLLECTION: &'static str = "events";
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (uri, server) = polymongo_testkit::uri_from_env_or_start().await?;
    let poly = PolyMongo::builder()
        .uri(&uri)
        .wait_queue_timeout(Duration::from_secs(2))
        .build()
        .await?;
    // Installed before any work starts; the task completes once the manager is closed.
    let shutdown = poly.close_on_signals(Duration::from_secs(10))?;

    let events = poly.model::<Event>();
    let worker = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            n += 1;
            let written = match events.db("app") {
                Ok(h) => h.run(|c| c.insert_one(Event { n })).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match written {
                Ok(()) if n == 20 => {
                    // Stand-in for Ctrl-C or `docker stop`.
                    let _ = std::process::Command::new("kill")
                        .args(["-TERM", &std::process::id().to_string()])
                        .status();
                }
                Ok(()) => {}
                Err(Error::Closed) => return n - 1,
                Err(e) => {
                    eprintln!("write {n} failed: {e}");
                    return n - 1;
                }
            }
        }
    });

    let done = shutdown.await?;
    let written = worker.await?;
    println!(
        "{}: closed {} pool(s), {} forced; {written} writes done before new work was refused",
        done.signal, done.report.pools_closed, done.report.pools_forced
    );
    // The application's own cleanup goes here (`exit` runs no destructors), then the
    // conventional exit status.
    drop(server);
    std::process::exit(done.signal.exit_code());
}
