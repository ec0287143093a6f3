//! The terminal view: ratatui on crossterm, in the alternate screen, until `q`, Esc or
//! Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::merge::{AppsSnapshot, Merger, TenantView};
use super::text::{headline, micros, rate};
use super::{poll, AppUrl, HttpClient};
use crate::exit;
use crate::out::{self, Outcome};

enum Input {
    Quit,
    Redraw,
}

/// Reads keys on a thread of its own (crossterm's reads block) until `stop`.
fn keys(
    stop: Arc<AtomicBool>,
) -> (
    tokio::sync::mpsc::UnboundedReceiver<Input>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let thread = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match event::poll(Duration::from_millis(100)) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(_) => break,
            }
            let input = match event::read() {
                Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => match k.code {
                    KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => Input::Quit,
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        Input::Quit
                    }
                    _ => continue,
                },
                Ok(Event::Resize(..)) => Input::Redraw,
                Ok(_) => continue,
                Err(_) => break,
            };
            if tx.send(input).is_err() {
                break;
            }
        }
    });
    (rx, thread)
}

pub(super) async fn run(
    client: &HttpClient,
    apps: &[AppUrl],
    interval: Duration,
    timeout: Duration,
) -> Outcome {
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            out::note(format_args!("polymongo: cannot use the terminal: {e}"));
            return Ok(exit::OTHER);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (mut input, reader) = keys(Arc::clone(&stop));
    let mut merger = Merger::default();
    let mut snapshot: Option<AppsSnapshot> = None;
    let mut next_poll = tokio::time::Instant::now();
    let code = 'view: loop {
        if let Some(s) = &snapshot {
            if let Err(e) = terminal.draw(|f| draw(f, s, interval)) {
                break 'view Err(e);
            }
        }
        tokio::select! {
            answers = async {
                tokio::time::sleep_until(next_poll).await;
                poll(client, apps, timeout).await
            } => {
                snapshot = Some(merger.merge(apps, answers));
                // The interval is at most a day (the command line's bound): no overflow.
                next_poll = tokio::time::Instant::now() + interval;
            }
            key = input.recv() => match key {
                Some(Input::Redraw) => {}
                Some(Input::Quit) | None => break 'view Ok(()),
            },
            _ = tokio::signal::ctrl_c() => break 'view Ok(()),
        }
    };
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    ratatui::restore();
    match code {
        Ok(()) => Ok(exit::OK),
        Err(e) => {
            out::note(format_args!("polymongo: cannot draw: {e}"));
            Ok(exit::OTHER)
        }
    }
}

fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

fn table<'a>(
    title: &'a str,
    header: &'a [&'a str],
    widths: &'a [Constraint],
    rows: Vec<Vec<String>>,
) -> Table<'a> {
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|r| Row::new(r.into_iter().map(Cell::from)))
        .collect();
    Table::new(rows, widths.to_vec())
        .header(Row::new(header.iter().map(|h| Cell::from(*h))).style(bold()))
        .block(Block::bordered().title(Line::from(title).style(bold())))
}

fn draw(f: &mut Frame, s: &AppsSnapshot, interval: Duration) {
    // Rows plus borders and header; an instance can send any number of pools.
    let height = |rows: usize| u16::try_from(rows).unwrap_or(u16::MAX).saturating_add(3);
    let instances = height(s.instances.len());
    let pools = height(s.pools.len().max(1));
    let [head, apps_area, pools_area, tenants_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(instances),
        Constraint::Length(pools),
        Constraint::Min(5),
    ])
    .areas(f.area());
    f.render_widget(
        Paragraph::new(format!(
            "{} — every {} s — q quits",
            headline(s),
            interval.as_secs()
        ))
        .style(bold()),
        head,
    );
    let app_rows = s
        .instances
        .iter()
        .map(|i| match &i.error {
            Some(e) => vec![
                i.url.clone(),
                "DOWN".to_owned(),
                e.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ],
            None => {
                // What the instance sent: summed saturating, never wrapping or panicking.
                let (open, used, max) = i.pools.iter().fold((0i64, 0i64, 0u64), |(o, u, m), p| {
                    (
                        o.saturating_add(p.connections),
                        u.saturating_add(p.in_use),
                        m.saturating_add(u64::from(p.max_size)),
                    )
                });
                vec![
                    i.url.clone(),
                    "up".to_owned(),
                    i.instance.clone().unwrap_or_default(),
                    format!("{used}/{max} ({open} open)"),
                    i.databases_in_use.to_string(),
                    i.operations.to_string(),
                    rate(i.ops_per_s),
                ]
            }
        })
        .collect();
    f.render_widget(
        table(
            "Applications",
            &[
                "app",
                "state",
                "instance",
                "connections in use",
                "dbs",
                "operations",
                "ops/s",
            ],
            &[
                Constraint::Fill(3),
                Constraint::Length(5),
                Constraint::Fill(3),
                Constraint::Length(19),
                Constraint::Length(6),
                Constraint::Length(11),
                Constraint::Length(9),
            ],
            app_rows,
        ),
        apps_area,
    );
    let pool_rows = s
        .pools
        .iter()
        .map(|p| {
            vec![
                p.cluster.clone(),
                p.kind.clone(),
                p.instances.to_string(),
                format!("{}/{}", p.in_use, p.max_size),
                p.connections.to_string(),
                p.wait_queue.to_string(),
                p.checkout_failures.to_string(),
            ]
        })
        .collect();
    f.render_widget(
        table(
            "Pools (summed over applications)",
            &[
                "cluster",
                "kind",
                "apps",
                "in use/max",
                "open",
                "waiting",
                "failed checkouts",
            ],
            &[
                Constraint::Fill(1),
                Constraint::Length(9),
                Constraint::Length(4),
                Constraint::Length(10),
                Constraint::Length(5),
                Constraint::Length(7),
                Constraint::Length(16),
            ],
            pool_rows,
        ),
        pools_area,
    );
    // Side by side on a wide terminal, else one above the other.
    let thirds = [
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Fill(1),
    ];
    let [busy, slow, errors] = if tenants_area.width >= 120 {
        Layout::horizontal(thirds).areas(tenants_area)
    } else {
        Layout::vertical(thirds).areas(tenants_area)
    };
    let rows = |names: &[String], row: &dyn Fn(&TenantView) -> Vec<String>| {
        names
            .iter()
            .filter_map(|n| s.tenant(n))
            .map(row)
            .collect::<Vec<_>>()
    };
    f.render_widget(
        table(
            "Busiest now",
            &["tenant", "ops/s", "ops", "flight"],
            &[
                Constraint::Fill(1),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(6),
            ],
            rows(&s.busiest, &|t| {
                vec![
                    t.database.clone(),
                    rate(t.ops_per_s),
                    t.operations.to_string(),
                    t.in_flight.to_string(),
                ]
            }),
        ),
        busy,
    );
    f.render_widget(
        table(
            "Slowest now",
            &["tenant", "mean now", "p99 now", "recent"],
            &[
                Constraint::Fill(1),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(9),
            ],
            rows(&s.slowest, &|t| {
                vec![
                    t.database.clone(),
                    micros(t.latency_now_us),
                    micros(t.p99_now_us),
                    micros(Some(t.recent_mean_us)),
                ]
            }),
        ),
        slow,
    );
    f.render_widget(
        table(
            "Most errors now",
            &["tenant", "errors/s", "errors", "ops"],
            &[
                Constraint::Fill(1),
                Constraint::Length(8),
                Constraint::Length(7),
                Constraint::Length(8),
            ],
            rows(&s.erroring, &|t| {
                vec![
                    t.database.clone(),
                    rate(t.errors_per_s),
                    t.errors.to_string(),
                    t.operations.to_string(),
                ]
            }),
        ),
        errors,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::super::merge::{figures_with, ClusterPools};
    use super::super::parse_app_url;
    use super::*;

    /// The screen `snapshot` is drawn as.
    fn screen(snapshot: &AppsSnapshot) -> String {
        let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
        terminal
            .draw(|f| draw(f, snapshot, Duration::from_secs(2)))
            .unwrap();
        terminal
            .backend()
            .buffer()
            .content()
            .iter()
            .map(|c| c.symbol())
            .collect()
    }

    #[test]
    fn an_instance_sending_the_largest_pool_figures_is_drawn_saturated() {
        let mut figures = figures_with(u64::MAX, i64::MAX);
        figures.pools.push(figures.pools[0].clone());
        let apps = [parse_app_url("h:1").unwrap()];
        let snapshot = Merger::default().merge(&apps, vec![Ok(figures)]);
        // Its two pools' connections in use, summed without wrapping.
        let screen = screen(&snapshot);
        assert!(screen.contains(&i64::MAX.to_string()), "{screen}");
    }

    #[test]
    fn more_pools_than_a_terminal_has_rows_are_drawn() {
        let apps = [parse_app_url("h:1").unwrap()];
        let mut snapshot = Merger::default().merge(&apps, vec![Ok(figures_with(1, 1))]);
        // As many as the layout's u16 counts: with the borders, more.
        snapshot.pools = vec![ClusterPools::default(); usize::from(u16::MAX)];
        let screen = screen(&snapshot);
        assert!(
            screen.contains("Pools (summed over applications)"),
            "{screen}"
        );
    }
}
