//! The run report: which tests ran on which server, and which were skipped and why.
//!
//! `cargo test` has no runtime skip: a test that returns early because no server here has what
//! it needs is printed as `ok` and counted as passed. So the kit keeps its own ledger. When env
//! `POLYMONGO_TEST_REPORT` names a file, every server a test starts and every skip is appended
//! to it as one line, from any number of test processes at once (one `write` per line on a file
//! opened for appending). The `testkit-report` program of this crate reads the file and prints
//! the summary — per server how many tests ran, per capability where it was exercised, and
//! every skipped test with its reason — and can fail the run when a server or a capability was
//! never exercised (`.ci/run` does both).
//!
//! Line format (tab-separated; tabs and newlines inside fields become spaces):
//!
//! ```text
//! start  <pass>  <test binary>  <test name>  <server kind>  <capabilities required, or "-">
//! skip   <pass>  <test binary>  <test name>  <capabilities required, or "-">  <reason>
//! ```
//!
//! The pass is the value of `POLYMONGO_TEST_SERVER` (`auto` when unset), so that a run of the
//! suite on several servers can tell "skipped on mongoeco, ran on nx-27017" from "never ran".
//! The test name is the name of the thread the test runs on, which libtest sets to the test's
//! path; the binary is the test executable's name without cargo's hash suffix.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;

use crate::capability::{Capabilities, Capability};
use crate::options::ServerOptions;
use crate::server::{ServerKind, TestServer};

/// Env var naming the file the kit appends its run report to (unset: no report).
pub const ENV_TEST_REPORT: &str = "POLYMONGO_TEST_REPORT";

/// Longest reason kept in the report (a line stays well under the size of an atomic append).
const MAX_REASON: usize = 1500;

/// Starts a server that has every capability in `needs` (see [`ServerOptions::require`]),
/// or reports the test as skipped and returns `None`.
///
/// A skip is printed to stderr (`SKIPPED <test>: …`) and, when `POLYMONGO_TEST_REPORT` is set,
/// written to the run report. Use it at the top of a test:
///
/// ```no_run
/// use polymongo_testkit::{server_for, Capability};
///
/// # async fn example() {
/// let Some(server) = server_for(&[Capability::FailPoints]).await else {
///     return; // skipped, with the reason in the report
/// };
/// # let _ = server;
/// # }
/// ```
///
/// # Panics
/// When a server that should have started did not (an install or start-up failure, or a
/// patch that no longer applies): that is a failure, not a skip.
pub async fn server_for(needs: &[Capability]) -> Option<TestServer> {
    server_for_with(ServerOptions::new().require_all(needs)).await
}

/// [`server_for`] with more options (persistent, managed, …); the capabilities are those of
/// `opts` ([`ServerOptions::require`]).
///
/// # Panics
/// As [`server_for`].
pub async fn server_for_with(opts: ServerOptions) -> Option<TestServer> {
    let needs = opts.needs();
    match TestServer::start_with(opts).await {
        Ok(server) => Some(server),
        Err(e) if e.is_unavailable() => {
            record_skip_of(needs, &e.to_string());
            None
        }
        Err(e) => panic!("the test server did not start: {e}"),
    }
}

/// Reports the calling test as skipped for a reason of its own (a missing tool, say), in the
/// same places as a skip for want of a server: stderr and the run report.
pub fn record_skip(reason: &str) {
    record_skip_of(Capabilities::NONE, reason);
}

fn record_skip_of(needs: Capabilities, reason: &str) {
    let test = test_name();
    eprintln!("SKIPPED {test}: {reason}");
    let needs = needs_field(needs);
    let reason: String = reason.chars().take(MAX_REASON).collect();
    append(&["skip", &pass(), &binary_name(), &test, &needs, &reason]);
}

/// Notes that the calling test started a server of `kind`.
pub(crate) fn record_start(kind: ServerKind, needs: Capabilities) {
    if std::env::var_os(ENV_TEST_REPORT).is_none() {
        return;
    }
    append(&[
        "start",
        &pass(),
        &binary_name(),
        &test_name(),
        &kind.to_string(),
        &needs_field(needs),
    ]);
}

/// Which pass of the suite this is: the forced server kind, or `auto`.
fn pass() -> String {
    match std::env::var(crate::server::ENV_TEST_SERVER) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_ascii_lowercase(),
        _ => "auto".to_owned(),
    }
}

fn needs_field(needs: Capabilities) -> String {
    if needs.is_empty() {
        "-".to_owned()
    } else {
        needs
            .iter()
            .map(Capability::name)
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn test_name() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" && !name.starts_with("tokio-runtime") => name.to_owned(),
        _ => "(unnamed test)".to_owned(),
    }
}

/// `transactions-0123456789abcdef` → `transactions`.
fn binary_name() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "?".to_owned());
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name.to_owned()
        }
        _ => stem,
    }
}

fn append(fields: &[&str]) {
    let Some(path) = std::env::var_os(ENV_TEST_REPORT).filter(|v| !v.is_empty()) else {
        return;
    };
    let mut line = fields
        .iter()
        .map(|f| f.replace(['\t', '\n', '\r'], " "))
        .collect::<Vec<_>>()
        .join("\t");
    line.push('\n');
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "polymongo-testkit: cannot append to the run report {}: {e}",
            std::path::Path::new(&path).display()
        );
    }
}

/// A run report read back: what ran where, and what was skipped.
///
/// A test "ran" in a pass when it started a server in that pass and did not report a skip in
/// it (a test may start a server and then find it lacks something).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Per server kind (as displayed, e.g. `nx-27017`): the tests (`binary test`) that ran on
    /// it.
    pub ran: BTreeMap<String, BTreeSet<String>>,
    /// Per capability name: per server kind, the tests that required it and ran there.
    pub exercised: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// Tests (`binary test`) that ran in no pass, with the reason of their (last) skip.
    pub skipped: BTreeMap<String, String>,
    /// Tests skipped in one pass but run in another, with the pass and reason of the skip.
    pub skipped_once: BTreeMap<String, String>,
    /// Lines that could not be read.
    pub malformed: usize,
}

impl RunReport {
    /// Reads the lines written by the kit (see the module docs).
    pub fn parse(text: &str) -> RunReport {
        // (pass, test) → starts (kind, needs), and skips.
        let mut starts: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
        let mut skips: BTreeMap<(String, String), String> = BTreeMap::new();
        let mut report = RunReport::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                ["start", pass, binary, test, kind, needs] => starts
                    .entry(((*pass).to_owned(), format!("{binary} {test}")))
                    .or_default()
                    .push(((*kind).to_owned(), (*needs).to_owned())),
                ["skip", pass, binary, test, _needs, reason] => {
                    skips.insert(
                        ((*pass).to_owned(), format!("{binary} {test}")),
                        (*reason).to_owned(),
                    );
                }
                _ => report.malformed += 1,
            }
        }
        for ((pass, id), servers) in &starts {
            if skips.contains_key(&(pass.clone(), id.clone())) {
                continue;
            }
            for (kind, needs) in servers {
                report
                    .ran
                    .entry(kind.clone())
                    .or_default()
                    .insert(id.clone());
                for cap in needs.split(',').filter(|c| !c.is_empty() && *c != "-") {
                    report
                        .exercised
                        .entry(cap.to_owned())
                        .or_default()
                        .entry(kind.clone())
                        .or_default()
                        .insert(id.clone());
                }
            }
        }
        let ran: BTreeSet<String> = report.ran.values().flatten().cloned().collect();
        for ((pass, id), reason) in skips {
            if ran.contains(&id) {
                report
                    .skipped_once
                    .insert(id, format!("(pass {pass}) {reason}"));
            } else {
                report.skipped.insert(id, reason);
            }
        }
        report
    }

    /// Tests that ran on a server, over all kinds.
    pub fn tests_that_ran(&self) -> usize {
        self.ran.values().flatten().collect::<BTreeSet<_>>().len()
    }

    /// The summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let per_kind: Vec<String> = self
            .ran
            .iter()
            .map(|(kind, tests)| format!("{kind} {}", tests.len()))
            .collect();
        let _ = writeln!(
            out,
            "test servers: {} tests ran on a server ({})",
            self.tests_that_ran(),
            if per_kind.is_empty() {
                "none".to_owned()
            } else {
                per_kind.join(", ")
            }
        );
        let _ = writeln!(out, "capabilities required by tests, and where they ran:");
        for cap in Capability::ALL {
            let line = match self.exercised.get(cap.name()) {
                Some(kinds) => kinds
                    .iter()
                    .map(|(kind, tests)| format!("{kind} {}", tests.len()))
                    .collect::<Vec<_>>()
                    .join(", "),
                None => "not exercised".to_owned(),
            };
            let _ = writeln!(out, "  {:<28} {line}", cap.name());
        }
        if self.skipped.is_empty() {
            let _ = writeln!(out, "skipped tests: 0");
        } else {
            let _ = writeln!(
                out,
                "skipped tests: {} (cargo test lists them as ok; they did not run):",
                self.skipped.len()
            );
            for (test, reason) in &self.skipped {
                let _ = writeln!(out, "  SKIPPED {test}: {reason}");
            }
        }
        if !self.skipped_once.is_empty() {
            let _ = writeln!(
                out,
                "skipped in one pass but run in another: {}",
                self.skipped_once.len()
            );
            for (test, reason) in &self.skipped_once {
                let _ = writeln!(out, "  skipped once {test}: {reason}");
            }
        }
        if self.malformed > 0 {
            let _ = writeln!(out, "({} unreadable report lines ignored)", self.malformed);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_counts_tests_per_server_capability_and_skip() {
        let text = "start\tauto\tbulk\tround_trip\tmongoeco\texact-bson-types,index-direction\n\
                    start\tauto\tbulk\tround_trip\tmongoeco\t-\n\
                    start\tauto\tbulk\tplain\tnx-27017\t-\n\
                    start\tauto\tcs\tcursor\tnx-27017\tchange-streams\n\
                    skip\tauto\tcs\tcursor\t-\tno cursor count here\n\
                    skip\tauto\tcs\twide\twide-change-streams\tno test server here has x\n\
                    garbage\n";
        let report = RunReport::parse(text);
        assert_eq!(report.tests_that_ran(), 2);
        assert_eq!(report.ran["mongoeco"].len(), 1, "one test, two servers");
        assert_eq!(report.exercised["index-direction"]["mongoeco"].len(), 1);
        assert!(
            !report.exercised.contains_key("change-streams"),
            "started, then skipped: not exercised"
        );
        assert_eq!(report.skipped.len(), 2);
        assert_eq!(report.malformed, 1);
        let summary = report.summary();
        assert!(
            summary.contains("2 tests ran on a server (mongoeco 1, nx-27017 1)"),
            "{summary}"
        );
        assert!(
            summary.contains("SKIPPED cs wide: no test server here"),
            "{summary}"
        );
        assert!(
            summary.contains("SKIPPED cs cursor: no cursor count"),
            "{summary}"
        );
        assert!(summary.contains("skipped tests: 2 (cargo"), "{summary}");
        assert!(
            summary.contains("fail-points                  not exercised"),
            "{summary}"
        );

        // The same test skipped in a second pass is not "never ran".
        let again = RunReport::parse(&format!(
            "{text}skip\tmongoeco\tbulk\tplain\t-\tmongoeco lacks it\n"
        ));
        let summary = again.summary();
        assert!(summary.contains("skipped tests: 2 (cargo"), "{summary}");
        assert!(
            summary.contains("skipped once bulk plain: (pass mongoeco) mongoeco lacks it"),
            "{summary}"
        );
    }

    #[test]
    fn binary_names_lose_cargo_hashes() {
        // The running test binary itself: `polymongo_testkit-<16 hex>`.
        assert_eq!(binary_name(), "polymongo_testkit");
    }
}
