//! `%kaggle datasets ...`: list, files and download. Like the official CLI,
//! `files` and `download` also work without credentials (public datasets),
//! and a download first asks for the dataset's metadata (its page and
//! licence, and an error if it cannot be had).

use super::args::Datasets;
use super::competitions::{all_pages, files_table};
use super::{Ctx, Get, file_dir, get};
use crate::magics::{ErrorInfo, MagicResult, text_result};
use ferrolab_kaggle::client::{Api, DATASETS};
use ferrolab_kaggle::download::Naming;
use ferrolab_kaggle::errors::{KaggleError, Target};
use ferrolab_kaggle::refs::{self, Dataset};
use ferrolab_kaggle::tables::{self, Table, left, linked, right};
use serde_json::{Value, json};

pub fn run(ctx: &mut Ctx, command: Datasets) -> MagicResult {
    match command {
        Datasets::List {
            search,
            user,
            mine,
            page,
        } => list(ctx, search.unwrap_or_default(), user, mine, page),
        Datasets::Files { dataset } => {
            let dataset = parse(dataset.given())?;
            files(ctx, &dataset)
        }
        Datasets::Download {
            dataset,
            file,
            path,
            wp,
            unzip,
            force,
            quiet,
        } => {
            let dataset = parse(dataset.given())?;
            let dir = ctx.download_dir(
                path.as_deref(),
                wp,
                &["datasets", &dataset.owner, &dataset.slug],
            )?;
            download(ctx, &dataset, file, dir, unzip, force, quiet)
        }
    }
}

fn parse(given: Option<&str>) -> Result<Dataset, ErrorInfo> {
    let given = given.ok_or_else(|| {
        ErrorInfo::usage(
            "No dataset specified: add OWNER/SLUG (or -d OWNER/SLUG, or the dataset's URL)",
        )
    })?;
    refs::dataset(given).map_err(ErrorInfo::usage)
}

fn api(ctx: &mut Ctx, target: &Target, anonymous: bool) -> Result<Api, ErrorInfo> {
    ctx.api(anonymous)
        .map_err(|error| ctx.explain(error, target))
}

/// The body naming a dataset (and its version, if given).
fn body(dataset: &Dataset) -> Value {
    let mut body = json!({"ownerSlug": dataset.owner, "datasetSlug": dataset.slug});
    if let Some(version) = dataset.version {
        body["datasetVersionNumber"] = json!(version);
    }
    body
}

fn list(ctx: &mut Ctx, search: String, user: Option<String>, mine: bool, page: u32) -> MagicResult {
    let target = Target::none();
    let api = api(ctx, &target, false)?;
    let mut request = json!({
        "tagIds": "",
        "search": search,
        "user": user.unwrap_or_default(),
        "page": page,
        "pageToken": "",
    });
    if mine {
        request["group"] = json!("DATASET_SELECTION_GROUP_MY");
    }
    let answer = api
        .call(DATASETS, "ListDatasets", &request)
        .map_err(|error| ctx.explain(error, &target))?;
    let rows: Vec<Vec<tables::Cell>> = tables::items(&answer, "datasets")
        .iter()
        .map(|dataset| {
            let reference = tables::text(dataset, "ref");
            let number = |key| {
                tables::number(dataset, key)
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            };
            let usability = dataset
                .get("usabilityRating")
                .and_then(Value::as_f64)
                .map(|rating| format!("{rating:.2}"))
                .unwrap_or_default();
            vec![
                linked(
                    reference.clone(),
                    format!("https://www.kaggle.com/datasets/{reference}"),
                ),
                tables::text(dataset, "title").into(),
                tables::number(dataset, "totalBytes")
                    .map(tables::size)
                    .unwrap_or_default()
                    .into(),
                tables::date(dataset, "lastUpdated").into(),
                number("downloadCount").into(),
                number("voteCount").into(),
                usability.into(),
            ]
        })
        .collect();
    if rows.is_empty() {
        return Ok(text_result("No datasets found"));
    }
    let more = !tables::text(&answer, "nextPageToken").is_empty();
    Ok(Some(
        Table {
            caption: None,
            columns: vec![
                left("dataset"),
                left("title"),
                right("size"),
                left("updated (UTC)"),
                right("downloads"),
                right("votes"),
                right("usability"),
            ],
            rows,
            footer: more.then(|| format!("More: %kaggle datasets list --page {}", page + 1)),
        }
        .bundle(),
    ))
}

fn files(ctx: &mut Ctx, dataset: &Dataset) -> MagicResult {
    let target = Target::dataset(&dataset.reference());
    let api = api(ctx, &target, true)?;
    let mut request = body(dataset);
    request["pageSize"] = json!(200);
    let files = all_pages(&api, DATASETS, "ListDatasetFiles", request, "datasetFiles")
        .map_err(|error| ctx.explain(error, &target))?;
    Ok(files_table(&files).or_else(|| text_result("No files found")))
}

fn download(
    ctx: &mut Ctx,
    dataset: &Dataset,
    file: Option<String>,
    dir: std::path::PathBuf,
    unzip: bool,
    force: bool,
    quiet: bool,
) -> MagicResult {
    let whole = Target::dataset(&dataset.reference());
    let target = match &file {
        Some(file) => whole.file(file),
        None => whole.clone(),
    };
    let api = api(ctx, &whole, true)?;
    let metadata = api
        .call(
            DATASETS,
            "GetDatasetMetadata",
            &json!({"ownerSlug": dataset.owner, "datasetSlug": dataset.slug}),
        )
        .map_err(|error| ctx.explain(error, &whole))?;
    let problem = tables::text(&metadata, "errorMessage");
    if !problem.is_empty() {
        return Err(ctx.explain(KaggleError::status(404, problem), &whole));
    }
    if !quiet {
        let licenses: Vec<String> = metadata
            .pointer("/info/licenses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|license| tables::text(license, "name"))
            .filter(|name| !name.is_empty())
            .collect();
        ctx.say(&format!("Dataset URL: {}", dataset.url()));
        if !licenses.is_empty() {
            ctx.say(&format!("License(s): {}", licenses.join(", ")));
        }
    }
    let mut request = body(dataset);
    let (naming, dir) = match &file {
        Some(file) => {
            request["fileName"] = json!(file);
            (
                Naming::FromUrl {
                    fallback: file.rsplit('/').next().unwrap_or(file).to_owned(),
                },
                file_dir(&dir, file)?,
            )
        }
        None => (Naming::Fixed(format!("{}.zip", dataset.slug)), dir),
    };
    let locate = || api.exchange(DATASETS, "DownloadDataset", &request, true);
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
