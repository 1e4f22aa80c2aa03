//! Moves the bytes of one download: one worker thread per unfinished
//! segment, each streaming its range into the preallocated `.part` file with
//! positioned writes, while the calling thread shows progress and saves the
//! sidecar every second.
//!
//! A worker that loses its connection asks again from where it stopped
//! (`Range` + `If-Range`), with backoff, up to [`MAX_FAILURES`] times in a row
//! without progress; a signed URL that stopped working (400/401/403/410) is
//! replaced by asking the API again. A `200` to a ranged request (the file
//! changed) or a `416` makes the whole download start over. An interrupt
//! stops every worker at its next chunk; the sidecar then records exactly what
//! is on disk.

use crate::client::{Answer, Api, error_message, without_query};
use crate::errors::KaggleError;
use crate::progress::Progress;
use crate::sidecar::{Segment, Sidecar, Verifier, content_range};
use reqwest::blocking::Response;
use reqwest::header;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Consecutive failures (without progress in between) before giving up.
pub const MAX_FAILURES: u32 = 5;
const CHUNK: usize = 256 * 1024;

/// How a transfer ended.
pub enum Ended {
    Complete,
    /// The remote file changed, or the range was refused: start over.
    Restart,
    Interrupted,
    Failed(KaggleError),
}

/// Asks the API for a fresh signed URL.
pub type Locate<'a> = &'a (dyn Fn() -> Result<Answer, KaggleError> + Sync);

/// Where the bytes come from and go.
#[derive(Clone, Copy)]
pub struct Job<'a> {
    pub api: &'a Api,
    pub locate: Locate<'a>,
    pub part: &'a Path,
    pub meta: &'a Path,
    pub url: &'a str,
}

struct Shared<'a> {
    api: &'a Api,
    locate: Locate<'a>,
    file: &'a File,
    url: Mutex<String>,
    validator: Option<String>,
    have: Vec<AtomicU64>,
    stop: AtomicBool,
    restart: AtomicBool,
    failure: Mutex<Option<KaggleError>>,
    /// The true end of a segment whose size was unknown, once known.
    open_end: AtomicU64,
}

impl Shared<'_> {
    fn fail(&self, error: KaggleError) {
        self.stop.store(true, Ordering::SeqCst);
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(error);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.api.cancel.is_set()
    }

    /// A fresh signed URL, unless another worker already got one.
    fn refresh(&self, stale: &str) -> Result<String, KaggleError> {
        let mut url = self.url.lock().unwrap_or_else(|p| p.into_inner());
        if *url != stale {
            return Ok(url.clone());
        }
        match (self.locate)()? {
            Answer::Redirect(fresh) => {
                log::debug!(
                    "kaggle: got a fresh signed URL for {}",
                    without_query(&fresh)
                );
                *url = fresh.clone();
                Ok(fresh)
            }
            _ => Err(KaggleError::Protocol(
                "the download method no longer redirects to the file".into(),
            )),
        }
    }
}

/// Runs every unfinished segment of `sidecar`. `first` is a response already
/// open for segment `first.0` (a fresh download's 200, or a resume's 206).
pub fn run(
    job: &Job,
    sidecar: &mut Sidecar,
    first: Option<(usize, Response)>,
    progress: &mut dyn Progress,
    verifier: &mut Verifier,
) -> Ended {
    let Job {
        api,
        locate,
        part,
        meta,
        url,
    } = *job;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(part)
    {
        Ok(file) => file,
        Err(error) => {
            return Ended::Failed(KaggleError::Io(format!(
                "cannot write {}: {error}",
                part.display()
            )));
        }
    };
    let shared = Shared {
        api,
        locate,
        file: &file,
        url: Mutex::new(url.to_owned()),
        validator: sidecar.validator().map(str::to_owned),
        have: sidecar
            .segments
            .iter()
            .map(|segment| AtomicU64::new(segment.have))
            .collect(),
        stop: AtomicBool::new(false),
        restart: AtomicBool::new(false),
        failure: Mutex::new(None),
        open_end: AtomicU64::new(u64::MAX),
    };
    let segments = sidecar.segments.clone();
    let mut first = first;
    std::thread::scope(|scope| {
        let mut workers = Vec::new();
        for (index, segment) in segments.iter().enumerate() {
            if segment.done() {
                continue;
            }
            let response = match &first {
                Some((at, _)) if *at == index => first.take().map(|(_, response)| response),
                _ => None,
            };
            let shared = &shared;
            let segment = *segment;
            workers.push(scope.spawn(move || worker(shared, index, segment, response)));
        }
        let mut saved = Instant::now();
        while workers.iter().any(|worker| !worker.is_finished()) {
            std::thread::sleep(Duration::from_millis(100));
            if api.cancel.is_set() {
                shared.stop.store(true, Ordering::SeqCst);
            }
            let done: u64 = shared.have.iter().map(|h| h.load(Ordering::SeqCst)).sum();
            progress.update(done);
            // Hash what is already contiguous on disk, a bounded amount at a time.
            let _ = verifier.advance(&file, contiguous(&segments, &shared), 32 << 20);
            if saved.elapsed() >= Duration::from_secs(1) {
                record(sidecar, &shared);
                let _ = sidecar.save(meta);
                saved = Instant::now();
            }
        }
    });
    record(sidecar, &shared);
    if let Some(end) = Some(shared.open_end.load(Ordering::SeqCst)).filter(|end| *end != u64::MAX)
        && let Some(last) = sidecar.segments.last_mut()
    {
        last.end = end;
        sidecar.size = Some(end);
    }
    if shared.restart.load(Ordering::SeqCst) {
        return Ended::Restart;
    }
    if let Some(error) = shared
        .failure
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
    {
        let _ = sidecar.save(meta);
        return Ended::Failed(error);
    }
    if api.cancel.is_set() || sidecar.segments.iter().any(|segment| !segment.done()) {
        let _ = sidecar.save(meta);
        return Ended::Interrupted;
    }
    Ended::Complete
}

/// Bytes from the start of the file that are all on disk.
fn contiguous(segments: &[Segment], shared: &Shared) -> u64 {
    let mut end = 0;
    for (segment, have) in segments.iter().zip(&shared.have) {
        if segment.start != end {
            break;
        }
        let have = have.load(Ordering::SeqCst);
        end = segment.start + have;
        if segment.end == u64::MAX || have < segment.size() {
            break;
        }
    }
    end
}

fn record(sidecar: &mut Sidecar, shared: &Shared) {
    for (segment, have) in sidecar.segments.iter_mut().zip(&shared.have) {
        segment.have = have.load(Ordering::SeqCst);
    }
}

/// What to do after a failed attempt.
enum Next {
    /// Try again; why it failed.
    Retry(String),
    Give(KaggleError),
}

fn worker(shared: &Shared, index: usize, segment: Segment, mut response: Option<Response>) {
    let mut failures = 0u32;
    let mut url = shared.url.lock().unwrap_or_else(|p| p.into_inner()).clone();
    loop {
        if shared.stopped() {
            return;
        }
        let have = shared.have[index].load(Ordering::SeqCst);
        let start = segment.start + have;
        if segment.end != u64::MAX && start >= segment.end {
            return;
        }
        let attempt = match response.take() {
            Some(open) => Ok(open),
            None => open_range(shared, &mut url, start, segment.end),
        };
        let next = match attempt {
            Ok(open) => match stream(shared, index, segment, open) {
                Ok(()) => return,
                Err(next) => next,
            },
            Err(next) => next,
        };
        let progressed = shared.have[index].load(Ordering::SeqCst) > have;
        failures = if progressed { 1 } else { failures + 1 };
        match next {
            Next::Give(error) => {
                shared.fail(error);
                return;
            }
            Next::Retry(why) if failures >= MAX_FAILURES => {
                shared.fail(KaggleError::Network {
                    host: crate::client::host_of(&url),
                    reason: format!("the download failed {failures} times in a row, last: {why}"),
                });
                return;
            }
            Next::Retry(_) => {
                if !shared.api.cancel.sleep(shared.api.retry.delay(failures)) {
                    return;
                }
            }
        }
    }
}

/// Opens `[start, end)` of the file with `Range` and `If-Range`.
fn open_range(shared: &Shared, url: &mut String, start: u64, end: u64) -> Result<Response, Next> {
    let range = if end == u64::MAX {
        format!("bytes={start}-")
    } else {
        format!("bytes={start}-{}", end - 1)
    };
    let mut headers = vec![(header::RANGE, range)];
    if let Some(validator) = &shared.validator {
        headers.push((header::IF_RANGE, validator.clone()));
    }
    let (response, _) = match shared.api.storage(url, &headers) {
        Ok(answer) => answer,
        Err(KaggleError::Network { reason, .. }) => {
            log::debug!("kaggle: range request failed: {reason}");
            return Err(Next::Retry(reason));
        }
        Err(error) => return Err(Next::Give(error)),
    };
    let status = response.status().as_u16();
    match status {
        206 => match content_range(response.headers()) {
            Some((first, _, _)) if first == start => Ok(response),
            _ => {
                shared.restart.store(true, Ordering::SeqCst);
                shared.stop.store(true, Ordering::SeqCst);
                Err(Next::Retry("the server sent another range".into()))
            }
        },
        200 | 416 => {
            // The file changed (If-Range failed) or the range is gone.
            shared.restart.store(true, Ordering::SeqCst);
            shared.stop.store(true, Ordering::SeqCst);
            Err(Next::Retry("the file changed".into()))
        }
        400 | 401 | 403 | 410 => {
            // An expired signed URL: ask the API for a new one.
            match shared.refresh(url) {
                Ok(fresh) => {
                    *url = fresh;
                    Err(Next::Retry(format!(
                        "HTTP {status}: the signed URL expired"
                    )))
                }
                Err(error) => Err(Next::Give(error)),
            }
        }
        429 | 500..=599 => Err(Next::Retry(format!("HTTP {status} from the storage host"))),
        _ => {
            let message = error_message(&response.text().unwrap_or_default());
            Err(Next::Give(KaggleError::status(status, message)))
        }
    }
}

/// Streams a response into the segment; `Ok` when the segment is complete.
fn stream(
    shared: &Shared,
    index: usize,
    segment: Segment,
    mut response: Response,
) -> Result<(), Next> {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        if shared.stopped() {
            return Ok(());
        }
        let have = shared.have[index].load(Ordering::SeqCst);
        let position = segment.start + have;
        let room = if segment.end == u64::MAX {
            CHUNK
        } else {
            (segment.end - position).min(CHUNK as u64) as usize
        };
        if room == 0 {
            return Ok(());
        }
        let count = match response.read(&mut buffer[..room]) {
            Ok(0) if segment.end == u64::MAX => {
                shared.open_end.store(position, Ordering::SeqCst);
                return Ok(());
            }
            Ok(0) => {
                log::debug!("kaggle: connection ended early at byte {position}");
                return Err(Next::Retry(format!(
                    "the connection closed at byte {position}"
                )));
            }
            Ok(count) => count,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                log::debug!("kaggle: read failed at byte {position}: {error}");
                return Err(Next::Retry(format!(
                    "the connection broke at byte {position}"
                )));
            }
        };
        if let Err(error) = shared.file.write_all_at(&buffer[..count], position) {
            return Err(Next::Give(KaggleError::Io(format!(
                "cannot write the download: {error}"
            ))));
        }
        shared.have[index].fetch_add(count as u64, Ordering::SeqCst);
    }
}
