//! Prints the summary of a test kit run report (env `POLYMONGO_TEST_REPORT` during the run):
//! per server how many tests ran, per capability where it was exercised, every skipped test and
//! why. Fails (exit 1) when a required server kind or capability was never exercised.
//!
//! ```text
//! testkit-report <report file> [--require-kind KIND]... [--require-capability NAME]...
//! ```

use std::process::ExitCode;

use polymongo_testkit::{Capability, RunReport};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut file = None;
    let (mut kinds, mut caps) = (Vec::new(), Vec::new());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--require-kind" => match args.next() {
                Some(kind) => kinds.push(kind),
                None => return usage("--require-kind needs a server kind"),
            },
            "--require-capability" => match args.next() {
                Some(cap) if Capability::ALL.iter().any(|c| c.name() == cap) => caps.push(cap),
                Some(cap) => return usage(&format!("unknown capability {cap:?}")),
                None => return usage("--require-capability needs a capability name"),
            },
            "-h" | "--help" => return usage(""),
            _ if file.is_none() => file = Some(arg),
            _ => return usage(&format!("unexpected argument {arg:?}")),
        }
    }
    let Some(file) = file else {
        return usage("missing the report file");
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            eprintln!("testkit-report: cannot read {file}: {e}");
            return ExitCode::from(2);
        }
    };
    let report = RunReport::parse(&text);
    print!("{}", report.summary());
    let mut failed = false;
    for kind in &kinds {
        if report.ran.get(kind).is_none_or(|t| t.is_empty()) {
            println!("REQUIRED but no test ran on {kind}");
            failed = true;
        }
    }
    for cap in &caps {
        if report.exercised.get(cap).is_none_or(|k| k.is_empty()) {
            println!("REQUIRED but no test exercised {cap}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn usage(problem: &str) -> ExitCode {
    if !problem.is_empty() {
        eprintln!("testkit-report: {problem}");
    }
    eprintln!(
        "usage: testkit-report <report file> [--require-kind KIND]... \
         [--require-capability NAME]...\ncapabilities: {}",
        Capability::ALL.map(Capability::name).join(", ")
    );
    ExitCode::from(2)
}
