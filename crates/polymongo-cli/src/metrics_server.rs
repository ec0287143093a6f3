//! `polymongo metrics --listen`: the Prometheus endpoint.

use std::net::SocketAddr;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use polymongo::PolyMongo;

/// Serves `/metrics` on `listen` until `stop` completes; prints the bound address first.
pub async fn serve(
    poly: PolyMongo,
    listen: SocketAddr,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    crate::out::note(format_args!("serving metrics on http://{bound}/metrics"));
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let poly = poly.clone();
            async move {
                // The cluster's databases, so each scrape has something to say about them
                // (and the manager's own pools and usage figures move).
                let _ = poly.stats().list_databases().await;
                (
                    [(CONTENT_TYPE, polymongo::metrics::CONTENT_TYPE)],
                    polymongo::metrics::render(&poly),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}
