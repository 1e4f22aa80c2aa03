//! One file from Kaggle onto the disk, safely and resumably.
//!
//! The download RPC answers with a redirect to a signed URL whose last path
//! segment names the file (or, for a leaderboard, with the bytes). The bytes
//! go to `NAME.part`, with the sidecar `NAME.part.json` (see
//! [`sidecar`](crate::sidecar)); only a complete file whose size (and
//! `x-goog-hash`, when sent) checks out is renamed to `NAME`, with its mtime
//! set to the server's `Last-Modified`. A later run finds the `.part` and
//! resumes it with `Range` + `If-Range`. A local file with the remote size
//! and an mtime no older than `Last-Modified` (compared as UTC instants) is
//! up to date and skipped unless `--force`; so is an archive that was already
//! extracted, recorded by a small stamp file. A kept archive that failed to
//! extract because it is damaged gets an mtime of 1970, so it is never up to
//! date and the next run downloads it again.

use crate::client::{Answer, Api, error_message, without_query};
use crate::errors::KaggleError;
use crate::progress::Progress;
use crate::sidecar::{self, Remote, Sidecar};
use crate::tables::size;
use crate::transfer::{self, Ended, Locate};
use reqwest::blocking::Response;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// How the local file is named.
#[derive(Debug, Clone)]
pub enum Naming {
    /// The last path segment of the signed URL (`fallback` if it has none).
    FromUrl { fallback: String },
    /// `STEM.EXT`, with the extension of the signed URL's file (`zip` if none).
    Stem(String),
    /// Exactly this name.
    Fixed(String),
}

impl Naming {
    pub fn name(&self, url: &str) -> String {
        let from_url = url_file_name(url);
        match self {
            Naming::FromUrl { fallback } => from_url.unwrap_or_else(|| fallback.clone()),
            Naming::Stem(stem) => {
                let extension = from_url
                    .as_deref()
                    .and_then(|name| name.rsplit_once('.').map(|(_, ext)| ext.to_owned()))
                    .filter(|ext| !ext.is_empty() && ext.len() <= 8)
                    .unwrap_or_else(|| "zip".to_owned());
                format!("{stem}.{extension}")
            }
            Naming::Fixed(name) => name.clone(),
        }
    }
}

/// The percent-decoded last path segment of `url`, if it is a safe file name.
pub fn url_file_name(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let last = parsed.path_segments()?.next_back()?.to_owned();
    let bytes = last.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        if bytes[i] == b'%'
            && let Some(byte) = hex
        {
            decoded.push(byte);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(decoded).ok()?;
    let safe = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
    safe.then_some(name)
}

/// What to download and where.
pub struct Fetch<'a> {
    pub api: &'a Api,
    pub locate: Locate<'a>,
    pub dir: PathBuf,
    pub naming: Naming,
    pub force: bool,
}

#[derive(Debug)]
pub enum Fetched {
    Downloaded {
        path: PathBuf,
        bytes: u64,
        remote: Remote,
    },
    UpToDate {
        path: PathBuf,
        why: String,
        remote: Remote,
    },
}

/// The stamp an extracted archive leaves, so the next run knows it is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stamp {
    pub size: Option<u64>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

pub fn stamp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.extracted.json"))
}

/// Records that the archive at `path` (now deleted) was extracted.
pub fn write_stamp(path: &Path, remote: &Remote) {
    let stamp = Stamp {
        size: remote.size,
        etag: remote.etag.clone(),
        last_modified: remote.last_modified.clone(),
    };
    let _ = fs::write(
        stamp_path(path),
        serde_json::to_vec(&stamp).unwrap_or_default(),
    );
}

fn part_paths(path: &Path) -> (PathBuf, PathBuf) {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    (
        path.with_file_name(format!("{name}.part")),
        path.with_file_name(format!("{name}.part.json")),
    )
}

/// Why the local copy can be kept, if it can.
pub fn up_to_date(path: &Path, remote: &Remote) -> Option<String> {
    let modified = remote.modified()?;
    if let Ok(metadata) = fs::metadata(path) {
        let same_size = remote.size.is_none_or(|size| size == metadata.len());
        let local = metadata.modified().ok()?;
        if same_size && local >= modified {
            return Some(format!(
                "same size, and not changed on Kaggle since {} UTC",
                chrono::DateTime::<chrono::Utc>::from(modified).format("%Y-%m-%d %H:%M:%S")
            ));
        }
        return None;
    }
    let stamp: Stamp = serde_json::from_slice(&fs::read(stamp_path(path)).ok()?).ok()?;
    let same = stamp.size == remote.size
        && (stamp.etag.is_some() && stamp.etag == remote.etag
            || stamp.etag.is_none() && stamp.last_modified == remote.last_modified);
    same.then(|| "already downloaded and extracted, unchanged on Kaggle".to_owned())
}

/// A kept archive that turned out damaged is not a good local copy: its
/// modification time goes back to 1970, so the next run downloads it again
/// (see [`up_to_date`]) instead of extracting the same bad bytes.
pub fn mark_stale(path: &Path) {
    if let Ok(file) = fs::File::options().write(true).open(path) {
        let _ = file.set_modified(SystemTime::UNIX_EPOCH);
    }
}

/// Downloads (or resumes, or skips) the file, telling `progress` how far it got.
pub fn fetch(fetch: &Fetch, progress: &mut dyn Progress) -> Result<Fetched, KaggleError> {
    fs::create_dir_all(&fetch.dir).map_err(|error| {
        KaggleError::Io(format!("cannot create {}: {error}", fetch.dir.display()))
    })?;
    let url = match (fetch.locate)()? {
        Answer::Redirect(url) => url,
        Answer::Body(response) => return save_body(fetch, response, progress),
        Answer::Json(value) => match value.get("url").and_then(|url| url.as_str()) {
            Some(url) => url.to_owned(),
            None => {
                return Err(KaggleError::Protocol(
                    "the download method did not redirect to the file".into(),
                ));
            }
        },
    };
    let name = fetch.naming.name(&url);
    let path = fetch.dir.join(&name);
    let (part, meta) = part_paths(&path);
    let mut url = url;
    let mut refreshed = 0;
    let mut restarts = 0;
    let mut failures = 0;
    loop {
        let resume = Sidecar::load(&meta, &part);
        let mut headers = Vec::new();
        let mut first_segment = 0;
        if let Some(sidecar) = &resume {
            // Ask for the first unfinished range, only if the file is unchanged.
            if let Some((index, segment)) = sidecar
                .segments
                .iter()
                .enumerate()
                .find(|(_, segment)| !segment.done())
            {
                first_segment = index;
                let start = segment.start + segment.have;
                let range = if segment.end == u64::MAX {
                    format!("bytes={start}-")
                } else {
                    format!("bytes={start}-{}", segment.end - 1)
                };
                headers.push((reqwest::header::RANGE, range));
                if let Some(validator) = sidecar.validator() {
                    headers.push((reqwest::header::IF_RANGE, validator.to_owned()));
                }
            }
        }
        let response = match fetch.api.storage(&url, &headers) {
            Ok((response, _)) => response,
            Err(KaggleError::Network { host, reason }) if failures < transfer::MAX_FAILURES => {
                failures += 1;
                log::debug!("kaggle: {host}: {reason}; trying again");
                backoff(fetch, failures)?;
                continue;
            }
            Err(error) => return Err(error),
        };
        let status = response.status().as_u16();
        if (status == 429 || status >= 500) && failures < transfer::MAX_FAILURES {
            failures += 1;
            backoff(fetch, failures)?;
            continue;
        }
        match (status, resume) {
            (206, Some(mut sidecar)) => {
                let fits =
                    sidecar::content_range(response.headers()).is_some_and(|(start, _, total)| {
                        let segment = sidecar.segments[first_segment];
                        start == segment.start + segment.have
                            && (total.is_none() || sidecar.size.is_none() || total == sidecar.size)
                    });
                if !fits {
                    discard(&part, &meta);
                    restarts += 1;
                } else {
                    log::debug!("kaggle: resuming {} at {} bytes", name, sidecar.have());
                    let remote = Remote {
                        size: sidecar.size,
                        etag: sidecar.etag.clone(),
                        last_modified: sidecar.last_modified.clone(),
                        ranges: true,
                        md5: sidecar.md5.clone(),
                        crc32c: sidecar.crc32c.clone(),
                    };
                    match transfer_into(
                        fetch,
                        progress,
                        &path,
                        &url,
                        &mut sidecar,
                        Some((first_segment, response)),
                        remote,
                    )? {
                        Some(fetched) => return Ok(fetched),
                        None => {
                            restarts += 1;
                            discard(&part, &meta);
                        }
                    }
                }
            }
            (200, resume) => {
                if resume.is_some() {
                    // If-Range did not match: the file changed on Kaggle.
                    discard(&part, &meta);
                }
                let remote = Remote::from_headers(response.headers());
                if !fetch.force
                    && let Some(why) = up_to_date(&path, &remote)
                {
                    return Ok(Fetched::UpToDate { path, why, remote });
                }
                let segments =
                    sidecar::plan(remote.size, remote.ranges && remote.validator().is_some());
                let mut sidecar = Sidecar::new(&url, &remote, segments);
                let file = fs::File::create(&part).map_err(|error| {
                    KaggleError::Io(format!("cannot create {}: {error}", part.display()))
                })?;
                if let Some(size) = remote.size {
                    file.set_len(size).map_err(|error| {
                        KaggleError::Io(format!("cannot make room for {}: {error}", part.display()))
                    })?;
                }
                drop(file);
                if sidecar.validator().is_some() {
                    let _ = sidecar.save(&meta);
                }
                match transfer_into(
                    fetch,
                    progress,
                    &path,
                    &url,
                    &mut sidecar,
                    Some((0, response)),
                    remote,
                )? {
                    Some(fetched) => return Ok(fetched),
                    None => {
                        restarts += 1;
                        discard(&part, &meta);
                    }
                }
            }
            (416, _) => {
                discard(&part, &meta);
                restarts += 1;
            }
            (400 | 401 | 403 | 410, _) if refreshed < 2 => {
                refreshed += 1;
                url = match (fetch.locate)()? {
                    Answer::Redirect(fresh) => fresh,
                    _ => {
                        return Err(KaggleError::Protocol(
                            "the download method no longer redirects to the file".into(),
                        ));
                    }
                };
            }
            (status, _) => {
                let message = error_message(&response.text().unwrap_or_default());
                return Err(KaggleError::Status {
                    status,
                    message: format!(
                        "{}{}",
                        if message.is_empty() {
                            String::new()
                        } else {
                            format!("{message} ")
                        },
                        format_args!("(from the storage host, for {})", without_query(&url))
                    ),
                    retry_after: None,
                    attempts: 1,
                });
            }
        }
        if restarts > 2 {
            return Err(KaggleError::Protocol(format!(
                "the file {name} kept changing while it was downloaded"
            )));
        }
    }
}

/// Waits before another try (`Err` if interrupted meanwhile).
fn backoff(fetch: &Fetch, failures: u32) -> Result<(), KaggleError> {
    if fetch.api.cancel.sleep(fetch.api.retry.delay(failures)) {
        Ok(())
    } else {
        Err(KaggleError::Interrupted(
            "interrupted before the download started".into(),
        ))
    }
}

fn discard(part: &Path, meta: &Path) {
    let _ = fs::remove_file(part);
    let _ = fs::remove_file(meta);
}

/// Runs the transfer; `None` means start over.
fn transfer_into(
    fetch: &Fetch,
    progress: &mut dyn Progress,
    path: &Path,
    url: &str,
    sidecar: &mut Sidecar,
    first: Option<(usize, Response)>,
    remote: Remote,
) -> Result<Option<Fetched>, KaggleError> {
    let (part, meta) = part_paths(path);
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    progress.start(&name, sidecar.size, sidecar.have());
    let job = transfer::Job {
        api: fetch.api,
        locate: fetch.locate,
        part: &part,
        meta: &meta,
        url,
    };
    let mut verifier = sidecar::Verifier::new(sidecar.md5.as_deref(), sidecar.crc32c.as_deref());
    let ended = transfer::run(&job, sidecar, first, progress, &mut verifier);
    let have = sidecar.have();
    let kept = || {
        format!(
            "{} ({}{}) is kept: run the same command again to resume",
            part.display(),
            size(have),
            sidecar
                .size
                .map(|total| format!(" of {}", size(total)))
                .unwrap_or_default()
        )
    };
    match ended {
        Ended::Restart => {
            progress.stop(have, "the file changed on Kaggle; starting over");
            Ok(None)
        }
        Ended::Interrupted => {
            progress.stop(have, "interrupted");
            Err(KaggleError::Interrupted(format!(
                "Download of {name} interrupted: {}.",
                kept()
            )))
        }
        Ended::Failed(error) => {
            progress.stop(have, "failed");
            let kept = kept();
            Err(match error {
                KaggleError::Network { host, reason } => KaggleError::Network {
                    host,
                    reason: format!("{reason}. {kept}"),
                },
                other => other,
            })
        }
        Ended::Complete => {
            let total = sidecar.size.unwrap_or(have);
            let length = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            if length != total || have != total {
                discard(&part, &meta);
                return Err(KaggleError::Protocol(format!(
                    "the download of {name} has {length} bytes, the server announced {total}; it was deleted, run the command again"
                )));
            }
            let checked = fs::File::open(&part)
                .map_err(|error| error.to_string())
                .and_then(|file| verifier.finish(&file, total));
            if let Err(why) = checked {
                discard(&part, &meta);
                return Err(KaggleError::Protocol(format!(
                    "the download of {name} is damaged: {why}. It was deleted; run the command again"
                )));
            }
            finish(&part, path, remote.modified())?;
            let _ = fs::remove_file(&meta);
            let _ = fs::remove_file(stamp_path(path));
            progress.finish(total);
            Ok(Some(Fetched::Downloaded {
                path: path.to_path_buf(),
                bytes: total,
                remote,
            }))
        }
    }
}

/// Sets the mtime to `Last-Modified` and renames `.part` into place.
fn finish(part: &Path, path: &Path, modified: Option<SystemTime>) -> Result<(), KaggleError> {
    if let Some(modified) = modified
        && let Ok(file) = fs::File::options().write(true).open(part)
    {
        let _ = file.set_modified(modified);
    }
    fs::rename(part, path).map_err(|error| {
        KaggleError::Io(format!(
            "cannot rename {} to {}: {error}",
            part.display(),
            path.display()
        ))
    })
}

/// Saves bytes served by the RPC itself (no resume: there is no URL to
/// resume from).
fn save_body(
    fetch: &Fetch,
    mut response: Response,
    progress: &mut dyn Progress,
) -> Result<Fetched, KaggleError> {
    let name = match &fetch.naming {
        Naming::Fixed(name) => name.clone(),
        Naming::Stem(stem) => format!("{stem}.zip"),
        Naming::FromUrl { fallback } => fallback.clone(),
    };
    let path = fetch.dir.join(&name);
    let (part, _) = part_paths(&path);
    let remote = Remote::from_headers(response.headers());
    progress.start(&name, remote.size, 0);
    let mut file = fs::File::create(&part)
        .map_err(|error| KaggleError::Io(format!("cannot create {}: {error}", part.display())))?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    loop {
        if fetch.api.cancel.is_set() {
            progress.stop(done, "interrupted");
            let _ = fs::remove_file(&part);
            return Err(KaggleError::Interrupted(format!(
                "Download of {name} interrupted."
            )));
        }
        let count = match response.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) => {
                progress.stop(done, "failed");
                let _ = fs::remove_file(&part);
                return Err(KaggleError::Network {
                    host: crate::client::host_of(fetch.api.base()),
                    reason: format!("the connection broke: {error}"),
                });
            }
        };
        file.write_all(&buffer[..count]).map_err(|error| {
            KaggleError::Io(format!("cannot write {}: {error}", part.display()))
        })?;
        done += count as u64;
        progress.update(done);
    }
    drop(file);
    if remote.size.is_some_and(|size| size != done) {
        let _ = fs::remove_file(&part);
        return Err(KaggleError::Protocol(format!(
            "{name}: {done} bytes arrived, the server announced {}",
            remote.size.unwrap_or_default()
        )));
    }
    finish(&part, &path, remote.modified())?;
    progress.finish(done);
    Ok(Fetched::Downloaded {
        path,
        bytes: done,
        remote,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tests::{api, canned, response};
    use crate::progress::Silent;
    use std::sync::Mutex;

    #[test]
    fn names_come_from_the_signed_url() {
        let url = "https://storage.googleapis.com/kaggle-competitions-data/kaggle/9988/train%20v2.csv?GoogleAccessId=x&Signature=y";
        assert_eq!(url_file_name(url).as_deref(), Some("train v2.csv"));
        assert_eq!(
            Naming::Stem("titanic".into()).name("http://h/b/file-path/titanic.zip?sig=1"),
            "titanic.zip"
        );
        assert_eq!(Naming::Stem("t".into()).name("http://h/b/"), "t.zip");
        assert_eq!(
            Naming::FromUrl {
                fallback: "a.csv".into()
            }
            .name("http://h/b/..%2Fetc"),
            "a.csv"
        );
    }

    #[test]
    fn up_to_date_compares_size_and_utc_times() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("a.csv");
        fs::write(&path, b"12345").unwrap();
        let modified = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        let mut remote = Remote {
            size: Some(5),
            last_modified: Some(httpdate::fmt_http_date(modified)),
            ..Remote::default()
        };
        assert!(up_to_date(&path, &remote).is_some());
        remote.last_modified = Some(httpdate::fmt_http_date(
            modified + std::time::Duration::from_secs(1),
        ));
        assert!(up_to_date(&path, &remote).is_none());
        remote.last_modified = Some(httpdate::fmt_http_date(modified));
        remote.size = Some(6);
        assert!(up_to_date(&path, &remote).is_none());
        // After --unzip the archive is gone but its stamp says it was there.
        let zip = temp.path().join("d.zip");
        let remote = Remote {
            size: Some(9),
            etag: Some("\"e1\"".into()),
            last_modified: Some(httpdate::fmt_http_date(modified)),
            ..Remote::default()
        };
        write_stamp(&zip, &remote);
        assert!(up_to_date(&zip, &remote).is_some());
        let changed = Remote {
            etag: Some("\"e2\"".into()),
            ..remote
        };
        assert!(up_to_date(&zip, &changed).is_none());
    }

    #[test]
    fn a_cut_connection_is_resumed_with_range_and_if_range() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let length = body.len().to_string();
        let headers = [
            ("Content-Length", length.as_str()),
            ("ETag", "\"v1\""),
            ("Accept-Ranges", "bytes"),
            ("Last-Modified", "Tue, 01 Oct 2024 10:00:00 GMT"),
        ];
        // The first answer promises everything and sends 30 000 bytes.
        let mut cut = response("200 OK", &headers, b"");
        cut.extend_from_slice(&body[..30_000]);
        let rest = format!("bytes 30000-99999/{}", body.len());
        let tail = response(
            "206 Partial Content",
            &[("Content-Range", rest.as_str()), ("ETag", "\"v1\"")],
            &body[30_000..],
        );
        let storage = canned(vec![cut, tail]);
        let signed = format!("{}/bucket/data.bin?X-Goog-Signature=1", storage.url);
        let api_server = canned(vec![]);
        let api = api(&api_server, None);
        let calls = Mutex::new(0);
        let locate = || {
            *calls.lock().unwrap() += 1;
            Ok(Answer::Redirect(signed.clone()))
        };
        let temp = tempfile::tempdir().unwrap();
        let fetched = fetch(
            &Fetch {
                api: &api,
                locate: &locate,
                dir: temp.path().to_path_buf(),
                naming: Naming::FromUrl {
                    fallback: "x".into(),
                },
                force: false,
            },
            &mut Silent,
        )
        .unwrap();
        let Fetched::Downloaded { path, bytes, .. } = fetched else {
            panic!("expected a download")
        };
        assert_eq!(bytes, 100_000);
        assert_eq!(fs::read(&path).unwrap(), body);
        assert_eq!(path.file_name().unwrap(), "data.bin");
        assert!(!temp.path().join("data.bin.part").exists());
        assert!(!temp.path().join("data.bin.part.json").exists());
        let seen = storage.seen.lock().unwrap();
        assert_eq!(seen[1].header("range"), Some("bytes=30000-99999"));
        assert_eq!(seen[1].header("if-range"), Some("\"v1\""));
        assert_eq!(seen[1].header("authorization"), None);
        assert_eq!(
            fs::metadata(&path).unwrap().modified().unwrap(),
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_727_776_800)
        );
    }

    #[test]
    fn a_download_that_fails_its_hash_is_deleted() {
        let body = b"these are not the bytes the hash is of".to_vec();
        let length = body.len().to_string();
        let storage = canned(vec![response(
            "200 OK",
            &[
                ("Content-Length", length.as_str()),
                ("ETag", "\"a\""),
                // md5("hello")
                ("x-goog-hash", "md5=XUFAKrxLKna5cZ2REBfFkg=="),
            ],
            &body,
        )]);
        let api_server = canned(vec![]);
        let api = api(&api_server, None);
        let locate = || Ok(Answer::Redirect(format!("{}/b/f.csv?sig=1", storage.url)));
        let temp = tempfile::tempdir().unwrap();
        let error = fetch(
            &Fetch {
                api: &api,
                locate: &locate,
                dir: temp.path().to_path_buf(),
                naming: Naming::FromUrl {
                    fallback: "x".into(),
                },
                force: false,
            },
            &mut Silent,
        )
        .unwrap_err();
        assert!(
            matches!(&error, KaggleError::Protocol(message) if message.contains("damaged") && message.contains("MD5")),
            "{error:?}"
        );
        assert_eq!(fs::read_dir(temp.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_expired_url_is_replaced_by_asking_again() {
        let body = b"0123456789".repeat(1000);
        let length = body.len().to_string();
        let storage = canned(vec![
            response(
                "403 Forbidden",
                &[("Content-Type", "application/xml")],
                b"<Error><Code>ExpiredToken</Code><Message>expired</Message></Error>",
            ),
            response(
                "200 OK",
                &[("Content-Length", length.as_str()), ("ETag", "\"a\"")],
                &body,
            ),
        ]);
        let api_server = canned(vec![]);
        let api = api(&api_server, None);
        let calls = Mutex::new(0);
        let locate = || {
            let mut calls = calls.lock().unwrap();
            *calls += 1;
            Ok(Answer::Redirect(format!(
                "{}/b/f.csv?sig={calls}",
                storage.url
            )))
        };
        let temp = tempfile::tempdir().unwrap();
        let fetched = fetch(
            &Fetch {
                api: &api,
                locate: &locate,
                dir: temp.path().to_path_buf(),
                naming: Naming::FromUrl {
                    fallback: "x".into(),
                },
                force: false,
            },
            &mut Silent,
        )
        .unwrap();
        assert!(matches!(fetched, Fetched::Downloaded { bytes: 10_000, .. }));
        assert_eq!(*calls.lock().unwrap(), 2);
        assert_eq!(storage.seen.lock().unwrap()[1].path, "/b/f.csv?sig=2");
    }
}
