//! `polymongo top --app URL[,URL…]`: the live view of running applications, from the figures
//! route each one serves (`polymongo_axum::figures`, the document [`polymongo::Figures`]).
//!
//! Every poll GETs each instance's figures at once and merges them: pools per instance and
//! summed per cluster, tenants merged by database name (operations and errors summed, rates
//! from the difference between this poll and the last, "slowest now" from the time spent and
//! operations counted in between). An instance that does not answer is shown as down and
//! counted, and the view goes on. On a terminal the view is drawn with ratatui and refreshes
//! in place until `q`, Esc or Ctrl-C; otherwise it prints plain text once, or with `--json`
//! one aggregated snapshot per poll as a JSON line (`--once`: one).

mod merge;
mod text;
mod tui;

use std::io::IsTerminal;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use polymongo::{Figures, FIGURES_VERSION};

use crate::exit;
use crate::out::{self, Outcome};
use merge::Merger;

/// Largest figures document read (a document is a few kilobytes; its size is bounded).
const MAX_BODY: usize = 4 << 20;

/// One `--app` value: an instance's figures URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppUrl {
    /// As given (shown in the view).
    pub shown: String,
    uri: hyper::Uri,
}

/// Parses an `--app` value: `http://HOST:PORT[/PATH]` or `HOST:PORT`; without a path, the
/// figures route is `/figures`.
pub fn parse_app_url(text: &str) -> Result<AppUrl, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("an empty URL".to_owned());
    }
    let full = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let uri: hyper::Uri = full
        .parse()
        .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{text}: https is not supported; point --app at the service's internal HTTP \
                 port (the figures route holds no secrets)"
            ))
        }
        other => {
            return Err(format!(
                "{text}: unsupported scheme {}",
                other.unwrap_or("(none)")
            ))
        }
    }
    if uri.authority().is_none() {
        return Err(format!("{text}: no host"));
    }
    let uri = if uri.path() == "/" && !full.trim_end_matches('/').ends_with("/figures") {
        let base = full.trim_end_matches('/');
        let with_path = match uri.query() {
            Some(_) => full.replacen('?', "figures?", 1),
            None => format!("{base}/figures"),
        };
        with_path
            .parse()
            .map_err(|e| format!("{text:?} is not a URL: {e}"))?
    } else {
        uri
    };
    Ok(AppUrl {
        shown: text.trim_end_matches('/').to_owned(),
        uri,
    })
}

/// Why `apps` names an instance twice, if it does: its figures would be counted twice in
/// every sum, and its rates computed against itself. Two values are the same instance when
/// they resolve to the same figures URL (`10.0.0.5:3000` and `http://10.0.0.5:3000/figures`)
/// or are shown alike.
pub fn repeated(apps: &[AppUrl]) -> Option<String> {
    apps.iter().enumerate().find_map(|(i, a)| {
        apps[..i]
            .iter()
            .find(|b| a.uri == b.uri || a.shown == b.shown)
            .map(|b| {
                let given = if a.shown == b.shown {
                    format!("{} is given twice", a.shown)
                } else {
                    format!(
                        "{} and {} are the same figures URL ({})",
                        b.shown, a.shown, a.uri
                    )
                };
                format!("--app: {given}; give each instance once")
            })
    })
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// The deepest cause of an error: what an operator can act on ("Connection refused").
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(source) = last.source() {
        last = source;
    }
    let text = last.to_string();
    // "Connection refused (os error 111)": the number tells an operator nothing more.
    match text.find(" (os error") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// GETs one instance's figures, within `timeout`.
async fn fetch(client: &HttpClient, app: &AppUrl, timeout: Duration) -> Result<Figures, String> {
    let request = hyper::Request::get(app.uri.clone())
        .header(hyper::header::ACCEPT, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("polymongo-top/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let work = async {
        let response = client.request(request).await.map_err(|e| cause(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("answered HTTP {}", status.as_u16()));
        }
        Ok(body)
    };
    let body = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))??;
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| "the answer is not JSON".to_owned())?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(FIGURES_VERSION) => {}
        Some(v) => {
            return Err(format!(
                "figures version {v} (this tool reads version {FIGURES_VERSION})"
            ))
        }
        None => return Err("the answer is not a figures document".to_owned()),
    }
    let figures: Figures = serde_json::from_value(value)
        .map_err(|e| printable(&format!("not a figures document: {e}")))?;
    Ok(printable_figures(figures))
}

/// `text` with every control character (an escape sequence's ESC among them) replaced by
/// U+FFFD: what an instance sends is shown on the user's terminal, and must not drive it.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// The figures with every string they show made [`printable`].
fn printable_figures(mut f: Figures) -> Figures {
    let fix = |s: &mut String| {
        if s.chars().any(char::is_control) {
            *s = printable(s);
        }
    };
    fix(&mut f.instance);
    for p in &mut f.pools {
        fix(&mut p.cluster);
        fix(&mut p.kind);
        fix(&mut p.state);
    }
    for t in f.tenants.iter_mut().chain(f.general.usage.as_mut()) {
        fix(&mut t.database);
        t.ranked.iter_mut().for_each(fix);
    }
    f
}

/// Polls every instance at once.
async fn poll(
    client: &HttpClient,
    apps: &[AppUrl],
    timeout: Duration,
) -> Vec<Result<Figures, String>> {
    futures_util::future::join_all(apps.iter().map(|app| fetch(client, app, timeout))).await
}

/// `polymongo top --app …`.
pub async fn top(apps: Vec<AppUrl>, json: bool, interval: u64, once: bool) -> Outcome {
    // The command line bounds the interval (1 s to a day); saturating keeps a caller that
    // skipped it from panicking.
    let interval = Duration::from_secs(interval);
    // A down instance must not hold the view up: at most the interval, within 1 to 5 s.
    let timeout = interval.clamp(Duration::from_secs(1), Duration::from_secs(5));
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(interval.saturating_mul(3))
        .build(connector);
    let live = !once && !json && std::io::stdout().is_terminal();
    if live {
        return tui::run(&client, &apps, interval, timeout).await;
    }
    let mut merger = Merger::default();
    loop {
        let answers = poll(&client, &apps, timeout).await;
        let snapshot = merger.merge(&apps, answers);
        if json {
            out::json_line(&snapshot)?;
        } else {
            out::bytes(text::render(&snapshot).as_bytes())?;
        }
        // JSON lines go on unless --once; plain text prints once.
        if once || !json {
            if snapshot.up == 0 {
                out::note(format_args!(
                    "polymongo: no instance answered ({} down)",
                    snapshot.down
                ));
                return Ok(exit::CONNECTION);
            }
            return Ok(exit::OK);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(exit::OK),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_urls_default_to_the_figures_route() {
        let u = parse_app_url("127.0.0.1:3000").unwrap();
        assert_eq!(u.uri.to_string(), "http://127.0.0.1:3000/figures");
        assert_eq!(u.shown, "127.0.0.1:3000");
        let u = parse_app_url("http://svc:8080/").unwrap();
        assert_eq!(u.uri.to_string(), "http://svc:8080/figures");
        let u = parse_app_url("http://svc:8080/ops/figures").unwrap();
        assert_eq!(u.uri.to_string(), "http://svc:8080/ops/figures");
        assert!(parse_app_url("https://svc/figures")
            .unwrap_err()
            .contains("https"));
        assert!(parse_app_url("").is_err());
    }

    #[test]
    fn an_instance_named_twice_is_found_however_it_is_spelled() {
        let apps = |list: &[&str]| -> Vec<AppUrl> {
            list.iter().map(|a| parse_app_url(a).unwrap()).collect()
        };
        assert_eq!(
            repeated(&apps(&["h:1", "h:2", "http://h:1/ops/figures"])),
            None
        );
        let twice = repeated(&apps(&["h:1", "h:2", "h:1"])).unwrap();
        assert!(twice.contains("h:1 is given twice"), "{twice}");
        let spelled = repeated(&apps(&["h:1", "http://h:1/figures"])).unwrap();
        assert!(
            spelled.contains("h:1 and http://h:1/figures are the same figures URL"),
            "{spelled}"
        );
        // Different URLs shown alike would share one row label and one previous sample.
        let alike = repeated(&apps(&["h:1/figures", "h:1/figures/"])).unwrap();
        assert!(alike.contains("is given twice"), "{alike}");
    }
}
