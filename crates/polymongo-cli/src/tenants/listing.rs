//! `tenants ls`: one page with the id to continue after, or every page streamed (`--all`),
//! invalid directory entries listed as problems beside the tenants, never skipped.

use polymongo::tenants::{ListTenants, TenantPage, Tenants};
use serde::Serialize;

use super::report::{self, Columns, Problem};
use super::{LsArgs, ALL_PAGE, PAGE};
use crate::commands::fail;
use crate::exit;
use crate::out::{self, Outcome, Stop};

/// `ls --json` without `--all`: the page as one document.
#[derive(Serialize)]
struct PageJson<'a> {
    tenants: &'a [polymongo::tenants::TenantInfo],
    invalid: Vec<Problem>,
    next: Option<&'a str>,
}

/// A line of `ls --all --json` for an invalid entry (tenants are lines of their own).
#[derive(Serialize)]
struct InvalidLine {
    invalid: Problem,
}

/// Exit 5 when the directory holds invalid entries among those listed.
fn code(invalid: u64) -> i32 {
    if invalid == 0 {
        exit::OK
    } else {
        exit::PARTIAL
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

async fn page(
    tenants: &Tenants,
    args: &LsArgs,
    limit: u32,
    after: Option<&str>,
) -> Result<TenantPage, Stop> {
    let mut query = ListTenants::new().limit(limit);
    if let Some(id) = after {
        query = query.after(id);
    }
    if let Some(state) = args.state {
        query = query.state(state);
    }
    if let Some(cluster) = &args.cluster {
        query = query.cluster(cluster.clone());
    }
    tenants.list(query).await.map_err(|e| Stop(fail(&e)))
}

pub async fn ls(tenants: &Tenants, args: &LsArgs, json: bool) -> Outcome {
    if args.all {
        return all(tenants, args, json).await;
    }
    let limit = args.limit.unwrap_or(PAGE);
    let page = page(tenants, args, limit, args.after.as_deref()).await?;
    let invalid = page.invalid.len() as u64;
    if json {
        out::json(&PageJson {
            tenants: &page.tenants,
            invalid: page.invalid.iter().map(Problem::of).collect(),
            next: page.next.as_deref(),
        })?;
        return Ok(code(invalid));
    }
    let mut columns = Columns::default();
    columns.fit(&page.tenants);
    columns.header()?;
    for t in &page.tenants {
        columns.row(t)?;
    }
    for e in &page.invalid {
        report::problem_line(e)?;
    }
    let mut summary = format!(
        "{} on this page",
        plural(page.tenants.len() as u64, "tenant", "tenants")
    );
    if invalid > 0 {
        summary.push_str(&format!(
            ", {} (listed above)",
            plural(
                invalid,
                "invalid directory entry",
                "invalid directory entries"
            )
        ));
    }
    match &page.next {
        Some(next) => summary.push_str(&format!(
            "; next page: --after {next} (or --all for every page)"
        )),
        None => summary.push_str("; last page"),
    }
    out::line(summary)?;
    Ok(code(invalid))
}

/// Every page from `--after` on, each printed as soon as it is read and then dropped.
async fn all(tenants: &Tenants, args: &LsArgs, json: bool) -> Outcome {
    let limit = args.limit.unwrap_or(ALL_PAGE);
    let mut after = args.after.clone();
    let mut columns = Columns::default();
    let (mut listed, mut invalid) = (0u64, 0u64);
    let mut first = true;
    loop {
        let page = page(tenants, args, limit, after.as_deref()).await?;
        if json {
            for t in &page.tenants {
                out::json_line(t)?;
            }
            for e in &page.invalid {
                out::json_line(&InvalidLine {
                    invalid: Problem::of(e),
                })?;
            }
        } else {
            columns.fit(&page.tenants);
            if first {
                columns.header()?;
            }
            for t in &page.tenants {
                columns.row(t)?;
            }
            for e in &page.invalid {
                report::problem_line(e)?;
            }
        }
        first = false;
        listed += page.tenants.len() as u64;
        invalid += page.invalid.len() as u64;
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if !json {
        let mut summary = plural(listed, "tenant", "tenants");
        if invalid > 0 {
            summary.push_str(&format!(
                ", {} (listed above)",
                plural(
                    invalid,
                    "invalid directory entry",
                    "invalid directory entries"
                )
            ));
        }
        out::line(summary)?;
    }
    Ok(code(invalid))
}
