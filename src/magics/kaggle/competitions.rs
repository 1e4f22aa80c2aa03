//! `%kaggle competitions ...`: list, files, download, submit (the three-step
//! upload: StartSubmissionUpload → PUT → CreateSubmission, then `--wait`
//! polls GetSubmission until COMPLETE or ERROR), submissions (failed ones
//! with their `errorDescription`) and leaderboard (`--show` / `--download`).

use super::args::Competitions;
use super::{Ctx, Get, file_dir, get};
use crate::magics::{ErrorInfo, MagicResult, text_result};
use ferrolab_kaggle::client::{Api, COMPETITIONS, as_u64};
use ferrolab_kaggle::download::Naming;
use ferrolab_kaggle::errors::{KaggleError, Target};
use ferrolab_kaggle::tables::{self, Table, left, linked, right};
use serde_json::{Value, json};
use std::time::{Duration, Instant, UNIX_EPOCH};

pub fn run(ctx: &mut Ctx, command: Competitions) -> MagicResult {
    match command {
        Competitions::List { search, page } => list(ctx, search.unwrap_or_default(), page),
        Competitions::Files { competition, quiet } => {
            let slug = ctx.competition(competition.given(), quiet)?;
            files(ctx, &slug)
        }
        Competitions::Download {
            competition,
            file,
            path,
            wp,
            unzip,
            force,
            quiet,
        } => {
            let slug = ctx.competition(competition.given(), quiet)?;
            let dir = ctx.download_dir(path.as_deref(), wp, &["competitions", &slug])?;
            download(ctx, &slug, file, dir, unzip, force, quiet)
        }
        Competitions::Submit {
            competition,
            file,
            message,
            wait,
            poll_interval,
            quiet,
        } => {
            let slug = ctx.competition(competition.given(), quiet)?;
            submit(ctx, &slug, &file, &message, wait, poll_interval, quiet)
        }
        Competitions::Submissions { competition, quiet } => {
            let slug = ctx.competition(competition.given(), quiet)?;
            submissions(ctx, &slug)
        }
        Competitions::Leaderboard {
            competition,
            show,
            download,
            path,
            quiet,
        } => {
            if !show && !download {
                return Err(ErrorInfo::usage(
                    "Either --show or --download must be specified",
                ));
            }
            let slug = ctx.competition(competition.given(), quiet)?;
            leaderboard(ctx, &slug, show, download, path, quiet)
        }
    }
}

fn api(ctx: &mut Ctx, target: &Target) -> Result<Api, ErrorInfo> {
    ctx.api(false).map_err(|error| ctx.explain(error, target))
}

/// The slug of a competition `ref` (a full URL in the current API).
fn slug_of(reference: &str) -> String {
    ferrolab_kaggle::refs::competition(reference).unwrap_or_else(|_| reference.to_owned())
}

fn list(ctx: &mut Ctx, search: String, page: u32) -> MagicResult {
    let target = Target::none();
    let api = api(ctx, &target)?;
    let answer = api
        .call(
            COMPETITIONS,
            "ListCompetitions",
            &json!({
                "group": "COMPETITION_LIST_TAB_EVERYTHING",
                "category": "HOST_SEGMENT_UNSPECIFIED",
                "sortBy": "COMPETITION_SORT_BY_BEST",
                "search": search,
                "page": page,
                "pageToken": "",
            }),
        )
        .map_err(|error| ctx.explain(error, &target))?;
    let rows: Vec<Vec<tables::Cell>> = tables::items(&answer, "competitions")
        .iter()
        .map(|competition| {
            let reference = tables::text(competition, "ref");
            let slug = slug_of(&reference);
            let url = if reference.starts_with("http") {
                reference.clone()
            } else {
                format!("https://www.kaggle.com/competitions/{slug}")
            };
            vec![
                linked(slug, url),
                tables::date(competition, "deadline").into(),
                tables::text(competition, "category").into(),
                tables::text(competition, "reward").into(),
                tables::number(competition, "teamCount")
                    .map(|n| n.to_string())
                    .unwrap_or_default()
                    .into(),
                tables::yes_no(competition, "userHasEntered").into(),
            ]
        })
        .collect();
    if rows.is_empty() {
        return Ok(text_result("No competitions found"));
    }
    let more = !tables::text(&answer, "nextPageToken").is_empty();
    Ok(Some(
        Table {
            caption: None,
            columns: vec![
                left("competition"),
                left("deadline (UTC)"),
                left("category"),
                right("reward"),
                right("teams"),
                left("entered"),
            ],
            rows,
            footer: more.then(|| format!("More: %kaggle competitions list --page {}", page + 1)),
        }
        .bundle(),
    ))
}

/// Every page of a listing (bounded).
pub fn all_pages(
    api: &Api,
    service: &str,
    method: &str,
    body: Value,
    items: &str,
) -> Result<Vec<Value>, KaggleError> {
    let mut all = Vec::new();
    let mut token = String::new();
    for _ in 0..50 {
        let mut request = body.clone();
        request["pageToken"] = Value::String(token.clone());
        let answer = api.call(service, method, &request)?;
        if let Some(message) = answer
            .get("errorMessage")
            .and_then(Value::as_str)
            .filter(|message| !message.is_empty())
        {
            return Err(KaggleError::status(404, message));
        }
        all.extend(tables::items(&answer, items).iter().cloned());
        token = tables::text(&answer, "nextPageToken");
        if token.is_empty() {
            break;
        }
    }
    Ok(all)
}

/// The files table shared with datasets.
pub fn files_table(files: &[Value]) -> Option<crate::protocol::content::MimeBundle> {
    if files.is_empty() {
        return None;
    }
    let total: u64 = files
        .iter()
        .filter_map(|file| tables::number(file, "totalBytes"))
        .sum();
    let rows = files
        .iter()
        .map(|file| {
            vec![
                tables::text(file, "name").into(),
                tables::number(file, "totalBytes")
                    .map(tables::size)
                    .unwrap_or_default()
                    .into(),
                tables::date(file, "creationDate").into(),
            ]
        })
        .collect();
    Some(
        Table {
            caption: None,
            columns: vec![left("name"), right("size"), left("created (UTC)")],
            rows,
            footer: Some(format!(
                "{} file{}, {} in all",
                files.len(),
                if files.len() == 1 { "" } else { "s" },
                tables::size(total)
            )),
        }
        .bundle(),
    )
}

fn files(ctx: &mut Ctx, slug: &str) -> MagicResult {
    let target = Target::competition(slug);
    let api = api(ctx, &target)?;
    let files = all_pages(
        &api,
        COMPETITIONS,
        "ListDataFiles",
        json!({"competitionName": slug, "pageSize": 200, "pageToken": ""}),
        "files",
    )
    .map_err(|error| ctx.explain(error, &target))?;
    Ok(files_table(&files).or_else(|| text_result("No files found")))
}

fn download(
    ctx: &mut Ctx,
    slug: &str,
    file: Option<String>,
    dir: std::path::PathBuf,
    unzip: bool,
    force: bool,
    quiet: bool,
) -> MagicResult {
    let competition = Target::competition(slug);
    let target = match &file {
        Some(file) => competition.file(file),
        None => competition,
    };
    let api = api(ctx, &target)?;
    let (method, body, naming, dir) = match &file {
        Some(file) => (
            "DownloadDataFile",
            json!({"competitionName": slug, "fileName": file}),
            Naming::FromUrl {
                fallback: file.rsplit('/').next().unwrap_or(file).to_owned(),
            },
            file_dir(&dir, file)?,
        ),
        None => (
            "DownloadDataFiles",
            json!({"competitionName": slug}),
            Naming::Stem(slug.to_owned()),
            dir,
        ),
    };
    let locate = || api.exchange(COMPETITIONS, method, &body, true);
    get(
        ctx,
        &api,
        Get {
            locate: &locate,
            dir,
            naming,
            force,
            quiet,
            unzip,
        },
    )
    .map_err(|error| ctx.explain(error, &target))?;
    Ok(None)
}

#[allow(clippy::too_many_arguments)]
fn submit(
    ctx: &mut Ctx,
    slug: &str,
    file: &str,
    message: &str,
    wait: Option<f64>,
    poll_interval: f64,
    quiet: bool,
) -> MagicResult {
    let path = ctx.resolve(file)?;
    let bytes = std::fs::read(&path).map_err(|error| {
        ErrorInfo::new(
            "FileNotFoundError",
            format!(
                "cannot read the submission file {}: {error}",
                path.display()
            ),
        )
    })?;
    let modified = std::fs::metadata(&path)
        .and_then(|metadata| metadata.modified())
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |duration| duration.as_secs());
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.to_owned());
    let target = Target::competition(slug);
    let api = api(ctx, &target)?;
    let explain = |error| ctx.explain(error, &target);
    let start = api
        .call(
            COMPETITIONS,
            "StartSubmissionUpload",
            &json!({
                "competitionName": slug,
                "contentLength": bytes.len(),
                "lastModifiedEpochSeconds": modified,
                "fileName": file_name,
            }),
        )
        .map_err(explain)?;
    let token = tables::text(&start, "token");
    let create_url = tables::text(&start, "createUrl");
    if token.is_empty() || create_url.is_empty() {
        return Err(explain(KaggleError::Protocol(
            "StartSubmissionUpload gave no upload URL".into(),
        )));
    }
    api.upload(&create_url, &bytes).map_err(|error| {
        let error = match error {
            KaggleError::Status { status, message, .. } => KaggleError::other(
                "KaggleError",
                format!("Could not submit to competition `{slug}`: the upload failed with HTTP {status}. {message}"),
            ),
            other => other,
        };
        explain(error)
    })?;
    let created = api
        .call_once(
            COMPETITIONS,
            "CreateSubmission",
            &json!({
                "competitionName": slug,
                "blobFileTokens": token,
                "submissionDescription": message,
            }),
        )
        .map_err(explain)?;
    let reference = created.get("ref").and_then(as_u64);
    if !quiet {
        let said = tables::text(&created, "message");
        let mut line = if said.is_empty() {
            format!("Submitted {file_name} to {slug}")
        } else {
            said
        };
        if let Some(reference) = reference {
            line.push_str(&format!(" (submission {reference})"));
        }
        if let Ok(limits) = api.call(
            COMPETITIONS,
            "GetSubmissionLimits",
            &json!({"competitionName": slug}),
        ) && let Some(left) = limits.get("numAllowedNow").and_then(as_u64)
        {
            line.push_str(&format!(
                ". {left} submission{} left today",
                if left == 1 { "" } else { "s" }
            ));
        }
        ctx.say(&line);
    }
    let Some(limit) = wait else {
        return Ok(None);
    };
    let Some(reference) = reference else {
        return Err(explain(KaggleError::Protocol(
            "CreateSubmission did not say the submission's number, so it cannot be followed".into(),
        )));
    };
    wait_for_score(ctx, &api, slug, reference, limit, poll_interval, quiet)
}

/// Polls until the submission is scored (or failed, or `limit` seconds pass).
fn wait_for_score(
    ctx: &Ctx,
    api: &Api,
    slug: &str,
    reference: u64,
    limit: f64,
    poll_interval: f64,
    quiet: bool,
) -> MagicResult {
    let target = Target::competition(slug);
    let started = Instant::now();
    let display_id = format!("ferrolab-kaggle-submission-{reference}");
    let mut shown = false;
    let poll = Duration::from_secs_f64(poll_interval.clamp(0.05, 3600.0));
    loop {
        let submission = api
            .call(COMPETITIONS, "GetSubmission", &json!({"ref": reference}))
            .map_err(|error| ctx.explain(error, &target))?;
        let status = tables::status_word(&tables::text(&submission, "status"));
        match status.as_str() {
            "COMPLETE" => {
                let public = tables::text(&submission, "publicScore");
                let private = tables::text(&submission, "privateScore");
                let mut line = format!(
                    "Submission {reference} scored: public score {}",
                    if public.is_empty() { "–" } else { &public }
                );
                if !private.is_empty() {
                    line.push_str(&format!(", private score {private}"));
                }
                return Ok(text_result(line));
            }
            "ERROR" => {
                let why = tables::text(&submission, "errorDescription");
                return Err(ErrorInfo::new(
                    "KaggleSubmissionError",
                    format!(
                        "Submission {reference} to {slug} failed: {}",
                        if why.is_empty() {
                            "Kaggle gave no reason"
                        } else {
                            &why
                        }
                    ),
                ));
            }
            _ => {}
        }
        let elapsed = started.elapsed().as_secs_f64();
        if limit > 0.0 && elapsed >= limit {
            return Ok(text_result(format!(
                "Submission {reference} is still {status} after {elapsed:.0} s; see `%kaggle competitions submissions -c {slug}` later."
            )));
        }
        if !quiet {
            let text = format!("Submission {reference}: {status} ({elapsed:.0} s)");
            let bundle = text_result(text).unwrap_or_default();
            if shown {
                ctx.cell
                    .update_display(bundle, Default::default(), &display_id);
            } else {
                ctx.cell
                    .display(bundle, Default::default(), Some(&display_id));
                shown = true;
            }
        }
        if !api.cancel.sleep(poll) {
            return Err(ErrorInfo::new(
                "Interrupted",
                format!("Stopped waiting; submission {reference} goes on being scored on Kaggle."),
            ));
        }
    }
}

fn submissions(ctx: &mut Ctx, slug: &str) -> MagicResult {
    let target = Target::competition(slug);
    let api = api(ctx, &target)?;
    let answer = api
        .call(
            COMPETITIONS,
            "ListSubmissions",
            &json!({"competitionName": slug, "page": 1, "pageToken": ""}),
        )
        .map_err(|error| ctx.explain(error, &target))?;
    let list = tables::items(&answer, "submissions");
    if list.is_empty() {
        return Ok(text_result("No submissions found"));
    }
    let any_error = list
        .iter()
        .any(|submission| !tables::text(submission, "errorDescription").is_empty());
    let mut columns = vec![
        right("ref"),
        left("fileName"),
        left("date (UTC)"),
        left("description"),
        left("status"),
        right("publicScore"),
        right("privateScore"),
    ];
    if any_error {
        columns.push(left("error"));
    }
    let rows = list
        .iter()
        .map(|submission| {
            let mut row: Vec<tables::Cell> = vec![
                tables::text(submission, "ref").into(),
                tables::text(submission, "fileName").into(),
                tables::date(submission, "date").into(),
                tables::text(submission, "description").into(),
                tables::status_word(&tables::text(submission, "status")).into(),
                tables::text(submission, "publicScore").into(),
                tables::text(submission, "privateScore").into(),
            ];
            if any_error {
                row.push(tables::text(submission, "errorDescription").into());
            }
            row
        })
        .collect();
    Ok(Some(
        Table {
            caption: None,
            columns,
            rows,
            footer: None,
        }
        .bundle(),
    ))
}

fn leaderboard(
    ctx: &mut Ctx,
    slug: &str,
    show: bool,
    download: bool,
    path: Option<String>,
    quiet: bool,
) -> MagicResult {
    let target = Target::competition(slug);
    let api = api(ctx, &target)?;
    if download {
        let dir = ctx.download_dir(path.as_deref(), false, &["competitions", slug])?;
        let body = json!({"competitionName": slug});
        let locate = || api.exchange(COMPETITIONS, "DownloadLeaderboard", &body, true);
        get(
            ctx,
            &api,
            Get {
                locate: &locate,
                dir,
                naming: Naming::Fixed(format!("{slug}-leaderboard.zip")),
                force: true,
                quiet,
                unzip: false,
            },
        )
        .map_err(|error| ctx.explain(error, &target))?;
    }
    if !show {
        return Ok(None);
    }
    let answer = api
        .call(
            COMPETITIONS,
            "GetLeaderboard",
            &json!({"competitionName": slug, "pageSize": 20, "pageToken": ""}),
        )
        .map_err(|error| ctx.explain(error, &target))?;
    let list = tables::items(&answer, "submissions");
    if list.is_empty() {
        return Ok(text_result("No results found"));
    }
    let rows = list
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            vec![
                (index + 1).to_string().into(),
                tables::text(entry, "teamId").into(),
                tables::text(entry, "teamName").into(),
                tables::date(entry, "submissionDate").into(),
                tables::text(entry, "score").into(),
            ]
        })
        .collect();
    Ok(Some(
        Table {
            caption: None,
            columns: vec![
                right("#"),
                right("teamId"),
                left("teamName"),
                left("submissionDate (UTC)"),
                right("score"),
            ],
            rows,
            footer: Some(format!(
                "The top {} (public leaderboard); all of it: %kaggle competitions leaderboard -c {slug} --download",
                list.len()
            )),
        }
        .bundle(),
    ))
}
