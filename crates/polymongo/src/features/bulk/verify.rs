//! Reading a dump whole without importing it: every record decoded and checked in order,
//! documents counted per collection, and the file's SHA-256 taken on the way.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::tokio::bufread::GzipDecoder;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader, ReadBuf};

use super::export::io;
use super::format::{self, Record, Sequence};
use super::{classify_line, Line, MAX_LINE_BYTES};
use crate::floor::bulk_report::DumpProblem;
use crate::floor::error::{Error, Result};

/// One collection of a dump, as [`verify_stream`] counted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DumpCollection {
    /// Its name.
    pub name: String,
    /// `collection`, `view` or `timeseries`.
    pub kind: String,
    /// Documents in the dump.
    pub documents: u64,
    /// Indexes recorded (the `_id` index excepted).
    pub indexes: u64,
}

/// What a dump holds, read whole and found sound: [`verify_stream`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DumpSummary {
    /// The database it was taken from.
    pub database: String,
    /// Its collections, in the dump's order.
    pub collections: Vec<DumpCollection>,
    /// Documents in all.
    pub documents: u64,
    /// Bytes of the records, uncompressed.
    pub bytes: u64,
    /// Bytes of the input as given (compressed, for a gzip file).
    pub file_bytes: u64,
    /// SHA-256 of the input as given, lowercase hex.
    pub sha256: String,
}

/// Reads a dump (plain or gzip, told by its first bytes) to its end without writing
/// anything: every record decoded, the order checked (header first, documents after their
/// collection, the `end` record's counts equal to what was read, nothing after it), with
/// bounded memory (one line at a time).
///
/// # Errors
/// [`Error::Dump`] naming the first line that is wrong (a dump that would import with
/// failures does not verify), [`Error::Io`] when `input` fails.
pub async fn verify_stream<R: AsyncRead + Unpin>(input: R) -> Result<DumpSummary> {
    let mut hashed = Hashing {
        inner: input,
        hasher: Sha256::new(),
        bytes: 0,
        failed: false,
    };
    let mut lines = 0;
    let read = {
        let mut input = BufReader::with_capacity(64 * 1024, &mut hashed);
        let head = input.fill_buf().await.map_err(io("reading the dump"))?;
        if head.starts_with(&[0x1f, 0x8b]) {
            let mut gz = GzipDecoder::new(input);
            gz.multiple_members(true);
            read_records(BufReader::with_capacity(64 * 1024, gz), &mut lines).await
        } else {
            read_records(input, &mut lines).await
        }
    };
    let mut summary = match read {
        // An I/O error that the input itself did not raise is the decoder's: the file.
        Err(Error::Io { source, .. }) if !hashed.failed => {
            return Err(Error::Dump {
                line: lines,
                problem: DumpProblem::BadCompression(source.to_string()),
            })
        }
        other => other?,
    };
    // Whatever follows the records (nothing, for a sound file) is part of the file too.
    tokio::io::copy(&mut hashed, &mut tokio::io::sink())
        .await
        .map_err(io("reading the dump"))?;
    summary.file_bytes = hashed.bytes;
    summary.sha256 = crate::floor::digest::hex(&hashed.hasher.finalize());
    Ok(summary)
}

async fn read_records<R: tokio::io::AsyncBufRead + Unpin>(
    mut input: R,
    number: &mut u64,
) -> Result<DumpSummary> {
    let mut summary = DumpSummary {
        database: String::new(),
        collections: Vec::new(),
        documents: 0,
        bytes: 0,
        file_bytes: 0,
        sha256: String::new(),
    };
    let mut sequence = Sequence::default();
    let mut line = Vec::new();
    loop {
        *number += 1;
        line.clear();
        let n = (&mut input)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .map_err(io("reading the dump"))?;
        summary.bytes += n as u64;
        let at = *number;
        let problem = |problem| Error::Dump { line: at, problem };
        match classify_line(n, &mut line) {
            Line::Eof => break,
            Line::TooLong => return Err(problem(DumpProblem::LineTooLong)),
            Line::NoNewline => return Err(problem(DumpProblem::TruncatedLine)),
            Line::Complete => {}
        }
        let record = format::decode(&line).map_err(problem)?;
        sequence.accept(&record).map_err(problem)?;
        match record {
            Record::Header(h) => summary.database = h.database,
            Record::Collection(c) => summary.collections.push(DumpCollection {
                name: c.name,
                kind: c.kind,
                documents: 0,
                indexes: c.indexes.len() as u64,
            }),
            Record::Document(_) => {
                summary.documents += 1;
                if let Some(c) = summary.collections.last_mut() {
                    c.documents += 1;
                }
            }
            Record::End { .. } => {}
        }
    }
    sequence.finish().map_err(|problem| Error::Dump {
        line: *number,
        problem,
    })?;
    Ok(summary)
}

/// Counts and hashes what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    /// Whether the input itself failed (as opposed to what reads it).
    failed: bool,
}

impl<R: AsyncRead + Unpin> AsyncRead for Hashing<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                self.bytes += fresh.len() as u64;
                self.hasher.update(fresh);
            }
            Poll::Ready(Err(_)) => self.failed = true,
            Poll::Pending => {}
        }
        polled
    }
}
