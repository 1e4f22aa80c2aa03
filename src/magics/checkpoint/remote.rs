//! Checkpoints in S3-compatible object storage (`s3://bucket/prefix`): AWS
//! S3, GCS's S3 interface, MinIO, R2, through the `object_store` crate.
//!
//! Layout: `prefix/ckpt-NNNNNN[-name]/…` exactly as on disk. Commit rule:
//! every data object is uploaded (multipart above 8 MiB, with retries and a
//! progress line) before `MANIFEST.json`, so a reader never sees half a
//! checkpoint; the manifest is signed (see [`signature`](super::signature)).
//! A save is committed locally first, in a private spool, and then uploaded;
//! an upload that fails stays in the spool and is retried by the next save.
//! Restore downloads into a private cache, checking every hash on the way.
//!
//! Credentials are the standard ones: `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL` (for anything but AWS), else the profile
//! (`AWS_PROFILE`, default `default`) in `~/.aws/credentials` and
//! `~/.aws/config`. Secrets never appear in messages.

use super::place::Opened;
use super::signature;
use super::state::Env;
use crate::kernel::{CellContext, StreamName};
use ferrolab_checkpoint::commit::{self, Listed, create_private_dir_all, create_private_file};
use ferrolab_checkpoint::hash::HashingWriter;
use ferrolab_checkpoint::manifest::{self, MANIFEST, MAX_MANIFEST_BYTES};
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as StorePath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutPayload, RetryConfig,
    WriteMultipart,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const SCHEME: &str = "s3://";
/// Files above this are uploaded in parts of this size.
const PART_BYTES: usize = 8 << 20;
const PARALLEL_PARTS: usize = 4;

pub fn is_url(text: &str) -> bool {
    text.starts_with(SCHEME)
}

/// The runtime every object-storage request runs on (the callers are plain
/// threads: magics, the engine's hooks).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferrolab-s3")
            .enable_all()
            .build()
            .expect("a tokio runtime for object storage")
    })
}

pub struct Remote {
    /// The environment it was made in (credentials, cache folder, key).
    env: Env,
    bucket: String,
    /// Without leading or trailing `/`; may be empty.
    prefix: String,
    endpoint: Option<String>,
    store: Arc<AmazonS3>,
}

/// `[profile]` settings from the AWS shared files, for the keys the
/// environment does not set.
fn profile_settings(env: &Env) -> BTreeMap<String, String> {
    let home = env.get("HOME").map(PathBuf::from);
    let profile = env
        .get("AWS_PROFILE")
        .cloned()
        .unwrap_or_else(|| "default".into());
    let mut found = BTreeMap::new();
    let files = [
        (
            env.get("AWS_SHARED_CREDENTIALS_FILE")
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials"))),
            profile.clone(),
        ),
        (
            env.get("AWS_CONFIG_FILE")
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws/config"))),
            if profile == "default" {
                profile.clone()
            } else {
                format!("profile {profile}")
            },
        ),
    ];
    for (file, section) in files {
        let Some(file) = file else { continue };
        let Ok(ini) = ini::Ini::load_from_file(&file) else {
            continue;
        };
        if let Some(properties) = ini.section(Some(section.as_str())) {
            for (key, value) in properties.iter() {
                found
                    .entry(key.to_ascii_lowercase())
                    .or_insert_with(|| value.to_owned());
            }
        }
    }
    found
}

fn env_set(env: &Env, name: &str) -> bool {
    env.get(name).is_some_and(|v| !v.is_empty())
}

impl Remote {
    /// Parses `s3://bucket/prefix` and prepares a client (no request yet).
    pub fn from_url(url: &str, env: &Env) -> Result<Remote, String> {
        let rest = url.strip_prefix(SCHEME).unwrap_or(url);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("`{url}`: expected s3://BUCKET/PREFIX"));
        }
        let prefix = prefix.trim_matches('/').to_owned();
        if !prefix.is_empty() && !manifest::is_safe_relative(&prefix) {
            return Err(format!(
                "`{url}`: the prefix may not contain empty, `.` or `..` parts"
            ));
        }
        // `AWS_*` from the notebook's environment (`%env` included), as
        // `AmazonS3Builder::from_env` reads them from the process.
        let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
        for (key, value) in env.iter().filter(|(k, _)| k.starts_with("AWS_")) {
            if let Ok(config) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(config, value);
            }
        }
        let profile = profile_settings(env);
        if !env_set(env, "AWS_ACCESS_KEY_ID") {
            for (key, config) in [
                ("aws_access_key_id", AmazonS3ConfigKey::AccessKeyId),
                ("aws_secret_access_key", AmazonS3ConfigKey::SecretAccessKey),
                ("aws_session_token", AmazonS3ConfigKey::Token),
            ] {
                if let Some(value) = profile.get(key) {
                    builder = builder.with_config(config, value);
                }
            }
        }
        if !env_set(env, "AWS_REGION") && !env_set(env, "AWS_DEFAULT_REGION") {
            builder = builder.with_region(
                profile
                    .get("region")
                    .cloned()
                    .unwrap_or_else(|| "us-east-1".into()),
            );
        }
        let endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
            .iter()
            .find_map(|name| env.get(*name).cloned())
            .or_else(|| profile.get("endpoint_url").cloned())
            .filter(|e| !e.is_empty());
        // One set of client options: `with_client_options` replaces them all.
        let mut client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(10))
            .with_timeout(Duration::from_secs(300));
        if let Some(endpoint) = &endpoint {
            builder = builder.with_endpoint(endpoint);
            client = client.with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 4,
                retry_timeout: Duration::from_secs(60),
            })
            .with_client_options(client)
            .build()
            .map_err(|e| format!("cannot use {url}: {}", describe(&e, env)))?;
        Ok(Remote {
            env: env.clone(),
            bucket: bucket.to_owned(),
            prefix,
            endpoint,
            store: Arc::new(store),
        })
    }

    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("{SCHEME}{}", self.bucket)
        } else {
            format!("{SCHEME}{}/{}", self.bucket, self.prefix)
        }
    }

    fn key(&self, rel: &str) -> StorePath {
        if self.prefix.is_empty() {
            StorePath::from(rel)
        } else {
            StorePath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// `~/.cache/ferrolab/checkpoints/<this destination>/`, private.
    fn local_root(&self) -> Result<PathBuf, String> {
        use sha2::Digest;
        let cache = crate::paths::base_dir_from(crate::paths::Base::Cache, |name| {
            self.env.get(name).map(std::ffi::OsString::from)
        })
        .unwrap_or_else(std::env::temp_dir);
        let identity = format!("{}|{}", self.url(), self.endpoint.as_deref().unwrap_or(""));
        let digest = hex::encode(sha2::Sha256::digest(identity.as_bytes()));
        let root = cache
            .join("ferrolab")
            .join("checkpoints")
            .join(&digest[..16]);
        create_private_dir_all(&root)
            .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        Ok(root)
    }

    /// Where saves are committed before they are uploaded.
    pub fn spool(&self) -> Result<PathBuf, String> {
        let spool = self.local_root()?.join("spool");
        create_private_dir_all(&spool)
            .map_err(|e| format!("cannot create {}: {e}", spool.display()))?;
        Ok(spool)
    }

    fn cache(&self) -> Result<PathBuf, String> {
        let cache = self.local_root()?.join("downloaded");
        create_private_dir_all(&cache)
            .map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
        Ok(cache)
    }

    fn explain(&self, error: &object_store::Error) -> String {
        let text = describe(error, &self.env);
        let hint = match error {
            object_store::Error::NotFound { .. } => format!(
                " (does the bucket `{}` exist{}?)",
                self.bucket,
                self.endpoint
                    .as_deref()
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default()
            ),
            object_store::Error::Unauthenticated { .. }
            | object_store::Error::PermissionDenied { .. } => credentials_hint(),
            _ if [
                "403",
                "SignatureDoesNotMatch",
                "InvalidAccessKeyId",
                "AccessDenied",
                "Forbidden",
            ]
            .iter()
            .any(|word| text.contains(word)) =>
            {
                credentials_hint()
            }
            _ if text.contains("NoSuchBucket") => {
                format!(" (the bucket `{}` does not exist)", self.bucket)
            }
            _ => String::new(),
        };
        format!("{}: {text}{hint}", self.url())
    }

    /// Every object under the prefix: `ckpt-*` name → (path inside → size).
    fn objects(&self) -> Result<BTreeMap<String, BTreeMap<String, u64>>, String> {
        let root = (!self.prefix.is_empty()).then(|| StorePath::from(self.prefix.as_str()));
        let metas: Vec<object_store::ObjectMeta> = runtime()
            .block_on(async {
                let mut stream = self.store.list(root.as_ref());
                let mut all = Vec::new();
                while let Some(meta) = stream.next().await {
                    all.push(meta?);
                }
                Ok::<_, object_store::Error>(all)
            })
            .map_err(|e| self.explain(&e))?;
        let mut grouped: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let lead = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        for meta in metas {
            let location = meta.location.as_ref();
            let Some(rel) = location.strip_prefix(&lead) else {
                continue;
            };
            let Some((top, inside)) = rel.split_once('/') else {
                continue;
            };
            if commit::number_of(top).is_some() {
                grouped
                    .entry(top.to_owned())
                    .or_default()
                    .insert(inside.to_owned(), meta.size);
            }
        }
        Ok(grouped)
    }

    fn get_manifest_text(&self, name: &str, size: u64) -> Result<String, String> {
        if size > MAX_MANIFEST_BYTES {
            return Err(format!(
                "MANIFEST.json is {size} bytes, too large to be one"
            ));
        }
        let bytes = runtime()
            .block_on(async {
                self.store
                    .get(&self.key(&format!("{name}/{MANIFEST}")))
                    .await?
                    .bytes()
                    .await
            })
            .map_err(|e| self.explain(&e))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "MANIFEST.json is not UTF-8".to_owned())
    }

    /// Checkpoints in the bucket, oldest first, checked by the sizes the
    /// listing reports (hashes are checked on download).
    pub fn list(&self, cancel: &dyn Fn() -> bool) -> Result<Vec<Listed>, String> {
        let cache = self.cache()?;
        let mut listed = Vec::new();
        for (name, files) in self.objects()? {
            if cancel() {
                return Err("interrupted while listing".into());
            }
            let number = commit::number_of(&name).unwrap_or(0);
            let manifest = match files.get(MANIFEST) {
                None => Err("no MANIFEST.json (an unfinished upload)".to_owned()),
                Some(size) => self
                    .get_manifest_text(&name, *size)
                    .and_then(|text| manifest::parse(&text))
                    .and_then(|manifest| {
                        if manifest.name != name {
                            return Err(format!(
                                "the manifest names {:?}, not this checkpoint",
                                manifest.name
                            ));
                        }
                        let problems: Vec<String> = manifest
                            .files
                            .iter()
                            .filter_map(|file| match files.get(&file.path) {
                                None => Some(format!("{}: missing", file.path)),
                                Some(size) if *size != file.size => Some(format!(
                                    "{}: {size} bytes, the manifest says {}",
                                    file.path, file.size
                                )),
                                Some(_) => None,
                            })
                            .collect();
                        if problems.is_empty() {
                            Ok(manifest)
                        } else {
                            Err(problems.join("; "))
                        }
                    }),
            };
            listed.push(Listed {
                path: cache.join(&name),
                name,
                number,
                manifest,
            });
        }
        listed.sort_by_key(|l| l.number);
        Ok(listed)
    }

    /// Downloads `entry` into the private cache (every file hash-checked;
    /// a complete earlier download is reused) and judges its origin by the
    /// manifest's signature.
    pub fn download(&self, entry: &Listed, cell: &CellContext) -> Result<Opened, String> {
        let manifest = entry.manifest.as_ref().map_err(String::clone)?;
        let text = self.get_manifest_text(&entry.name, MAX_MANIFEST_BYTES)?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("MANIFEST.json does not parse: {e}"))?;
        if manifest::parse(&text).as_ref() != Ok(manifest) {
            return Err(format!(
                "{} changed while it was being read; try again",
                entry.name
            ));
        }
        let origin = signature::verify(&value, &self.env);
        let target = entry.path.clone();
        let cached = manifest::read(&target)
            .ok()
            .filter(|m| m == manifest)
            .is_some_and(|m| {
                manifest::check(&target, &m, manifest::Depth::Hashes, &|| {
                    cell.is_cancelled()
                })
                .is_empty()
            });
        if !cached {
            let parent = target.parent().ok_or("no cache folder")?;
            let staging = tempfile::Builder::new()
                .prefix(".download-")
                .tempdir_in(parent)
                .map_err(|e| format!("cannot create a download folder: {e}"))?;
            let total = manifest.total_size();
            let mut progress = Progress::new(cell, "Downloading", &entry.name, total);
            for file in &manifest.files {
                self.download_file(&entry.name, file, staging.path(), cell, &mut progress)?;
            }
            let mut out = create_private_file(&staging.path().join(MANIFEST))
                .map_err(|e| format!("cannot write the manifest: {e}"))?;
            out.write_all(text.as_bytes())
                .and_then(|_| out.sync_all())
                .map_err(|e| format!("cannot write the manifest: {e}"))?;
            progress.finish();
            let _ = std::fs::remove_dir_all(&target);
            let kept = staging.keep();
            std::fs::rename(&kept, &target).map_err(|e| {
                let _ = std::fs::remove_dir_all(&kept);
                format!("cannot move the download into place: {e}")
            })?;
        }
        Ok(Opened {
            dir: target,
            origin,
        })
    }

    fn download_file(
        &self,
        name: &str,
        file: &ferrolab_checkpoint::FileEntry,
        staging: &Path,
        cell: &CellContext,
        progress: &mut Progress,
    ) -> Result<(), String> {
        let path = staging.join(&file.path);
        if let Some(parent) = path.parent() {
            create_private_dir_all(parent).map_err(|e| format!("cannot create a folder: {e}"))?;
        }
        let out = create_private_file(&path).map_err(|e| format!("{}: {e}", file.path))?;
        let mut writer = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, out));
        let location = self.key(&format!("{name}/{}", file.path));
        runtime()
            .block_on(async {
                let mut stream = self.store.get(&location).await?.into_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    if cell.is_cancelled() {
                        return Err(object_store::Error::Generic {
                            store: "ferrolab",
                            source: "interrupted".into(),
                        });
                    }
                    writer
                        .write_all(&chunk)
                        .map_err(|e| object_store::Error::Generic {
                            store: "ferrolab",
                            source: Box::new(e),
                        })?;
                    progress.advance(chunk.len() as u64);
                }
                Ok(())
            })
            .map_err(|e| format!("{}: {}", file.path, self.explain(&e)))?;
        writer.flush().map_err(|e| format!("{}: {e}", file.path))?;
        let (buffered, size, digest) = writer.finish();
        let out = buffered
            .into_inner()
            .map_err(|e| format!("{}: {}", file.path, e.into_error()))?;
        out.sync_all().map_err(|e| format!("{}: {e}", file.path))?;
        if size != file.size || digest != file.sha256 {
            return Err(format!(
                "{}: the downloaded bytes do not match the manifest (corrupted or changed)",
                file.path
            ));
        }
        Ok(())
    }

    /// Deletes the manifest first (the checkpoint is then invalid, never
    /// half-valid), then everything else under its name.
    pub fn remove(&self, name: &str) -> Result<(), String> {
        let objects = self.objects()?;
        let Some(files) = objects.get(name) else {
            return Ok(());
        };
        runtime()
            .block_on(async {
                if files.contains_key(MANIFEST) {
                    self.store
                        .delete(&self.key(&format!("{name}/{MANIFEST}")))
                        .await?;
                }
                for inside in files.keys().filter(|k| k.as_str() != MANIFEST) {
                    self.store
                        .delete(&self.key(&format!("{name}/{inside}")))
                        .await?;
                }
                Ok::<_, object_store::Error>(())
            })
            .map_err(|e| self.explain(&e))?;
        if let Ok(cache) = self.cache() {
            let _ = std::fs::remove_dir_all(cache.join(name));
        }
        Ok(())
    }

    /// Uploads a checkpoint committed in the spool under the next free
    /// number in the bucket; returns its name there. On success the local
    /// copy moves to the download cache; on failure it stays in the spool.
    pub fn upload(&self, committed: &Path, cell: Option<&CellContext>) -> Result<String, String> {
        let local = manifest::read(committed)?;
        let text = manifest::read_text(committed)?;
        let mut value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("MANIFEST.json: {e}"))?;
        let local_name = committed
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let label = commit::label_of(&local_name).map(str::to_owned);
        let mut progress =
            cell.map(|c| Progress::new(c, "Uploading", &local_name, local.total_size()));
        let mut attempts = 0;
        let (name, signed) = loop {
            attempts += 1;
            let existing = self.objects()?;
            let number = existing
                .keys()
                .filter_map(|n| commit::number_of(n))
                .max()
                .unwrap_or(0)
                + 1;
            let name = match &label {
                Some(label) => format!("{}{number:06}-{label}", commit::PREFIX),
                None => format!("{}{number:06}", commit::PREFIX),
            };
            value["name"] = serde_json::Value::String(name.clone());
            signature::sign(&mut value, &self.env)?;
            let signed = serde_json::to_vec_pretty(&value).map_err(|e| e.to_string())?;
            if let Some(progress) = progress.as_mut() {
                progress.restart(&name);
            }
            let outcome = (|| -> Result<bool, String> {
                for file in &local.files {
                    self.upload_file(committed, &name, &file.path, progress.as_mut())?;
                }
                // The manifest last, and only if no one took the name meanwhile.
                self.put_manifest(&name, signed.clone())
            })();
            match outcome {
                Ok(true) => break (name, signed),
                Ok(false) if attempts < 3 => continue,
                Ok(false) => {
                    return Err(format!(
                        "another save kept taking the next number in {}; the checkpoint is kept on this machine and uploaded with the next save",
                        self.url()
                    ));
                }
                Err(error) => {
                    self.remove_unfinished(&name);
                    return Err(format!(
                        "{error}. The checkpoint is kept on this machine and is uploaded with the next save; earlier checkpoints in {} are intact",
                        self.url()
                    ));
                }
            }
        };
        if let Some(progress) = progress.as_mut() {
            progress.finish();
        }
        // Keep the signed copy as the downloaded one: a restore needs no download.
        let kept = self.cache().is_ok_and(|cache| {
            let target = cache.join(&name);
            let _ = std::fs::remove_dir_all(&target);
            create_private_file(&committed.join(MANIFEST))
                .and_then(|mut file| file.write_all(&signed).and_then(|_| file.sync_all()))
                .is_ok()
                && std::fs::rename(committed, &target).is_ok()
        });
        if !kept {
            let _ = std::fs::remove_dir_all(committed);
        }
        Ok(name)
    }

    /// Writes the manifest unless one exists at `name` already (false: another
    /// kernel took the name). Stores without conditional writes overwrite.
    fn put_manifest(&self, name: &str, bytes: Vec<u8>) -> Result<bool, String> {
        let location = self.key(&format!("{name}/{MANIFEST}"));
        let created = runtime().block_on(self.store.put_opts(
            &location,
            PutPayload::from(bytes.clone()),
            PutMode::Create.into(),
        ));
        match created {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(object_store::Error::NotImplemented { .. })
            | Err(object_store::Error::NotSupported { .. }) => runtime()
                .block_on(self.store.put(&location, PutPayload::from(bytes)))
                .map(|_| true)
                .map_err(|e| self.explain(&e)),
            Err(error) => Err(self.explain(&error)),
        }
    }

    /// After a failed upload: removes what it left under `name`, unless a
    /// manifest is there (then the name is someone else's checkpoint).
    fn remove_unfinished(&self, name: &str) {
        let Ok(objects) = self.objects() else {
            return;
        };
        let Some(files) = objects.get(name) else {
            return;
        };
        if files.contains_key(MANIFEST) {
            return;
        }
        let _ = runtime().block_on(async {
            for inside in files.keys() {
                self.store
                    .delete(&self.key(&format!("{name}/{inside}")))
                    .await?;
            }
            Ok::<_, object_store::Error>(())
        });
    }

    fn upload_file(
        &self,
        dir: &Path,
        name: &str,
        rel: &str,
        mut progress: Option<&mut Progress>,
    ) -> Result<(), String> {
        let path = dir.join(rel);
        let mut file = std::fs::File::open(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let location = self.key(&format!("{name}/{rel}"));
        if size <= PART_BYTES as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            runtime()
                .block_on(self.store.put(&location, PutPayload::from(bytes)))
                .map_err(|e| format!("{rel}: {}", self.explain(&e)))?;
            if let Some(progress) = progress {
                progress.advance(size);
            }
            return Ok(());
        }
        runtime()
            .block_on(async {
                let upload = self.store.put_multipart(&location).await?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
                let mut buffer = vec![0u8; PART_BYTES];
                loop {
                    let read =
                        file.read(&mut buffer)
                            .map_err(|e| object_store::Error::Generic {
                                store: "ferrolab",
                                source: Box::new(e),
                            })?;
                    if read == 0 {
                        break;
                    }
                    writer.wait_for_capacity(PARALLEL_PARTS).await?;
                    writer.write(&buffer[..read]);
                    if let Some(progress) = progress.as_deref_mut() {
                        progress.advance(read as u64);
                    }
                }
                writer.finish().await.map(|_| ())
            })
            .map_err(|e| format!("{rel}: {}", self.explain(&e)))
    }

    /// Uploads whatever the spool still holds (saves whose upload failed,
    /// checkpoints made from inside a cell), oldest first; returns the names
    /// they got and the first error.
    pub fn upload_pending(&self, cell: Option<&CellContext>) -> (Vec<String>, Option<String>) {
        let Ok(spool) = self.spool() else {
            return (Vec::new(), None);
        };
        commit::sweep(&spool);
        let listed = commit::list(&spool, manifest::Depth::Sizes).unwrap_or_default();
        let mut names = Vec::new();
        for entry in listed {
            if entry.manifest.is_err() {
                continue;
            }
            match self.upload(&entry.path, cell) {
                Ok(name) => names.push(name),
                Err(error) => return (names, Some(error)),
            }
        }
        (names, None)
    }

    /// Names of saves waiting in the spool.
    pub fn pending(&self) -> Vec<String> {
        self.spool()
            .ok()
            .and_then(|spool| commit::list(&spool, manifest::Depth::Sizes).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(Listed::is_valid)
            .map(|l| l.name)
            .collect()
    }
}

fn credentials_hint() -> String {
    " (the credentials were refused: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile in ~/.aws/credentials)"
        .to_owned()
}

/// The text of an object-store error without anything secret in it.
fn describe(error: &object_store::Error, env: &Env) -> String {
    let mut out = error.to_string();
    for secret in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        if let Some(value) = env.get(secret)
            && value.len() >= 8
        {
            out = out.replace(value.as_str(), "…");
        }
    }
    out
}

/// A live `\r` progress line on stderr, at most every half second.
struct Progress<'a> {
    cell: &'a CellContext,
    verb: &'static str,
    name: String,
    total: u64,
    done: u64,
    last: Option<Instant>,
}

impl<'a> Progress<'a> {
    fn new(cell: &'a CellContext, verb: &'static str, name: &str, total: u64) -> Self {
        Progress {
            cell,
            verb,
            name: name.to_owned(),
            total,
            done: 0,
            last: None,
        }
    }

    /// Starts over (an upload retried under another name).
    fn restart(&mut self, name: &str) {
        self.name = name.to_owned();
        self.done = 0;
    }

    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        let due = self
            .last
            .is_none_or(|last| last.elapsed() >= Duration::from_millis(500));
        if due && self.total >= 4 << 20 {
            self.last = Some(Instant::now());
            self.show("\r");
        }
    }

    fn show(&self, end: &str) {
        let percent = (self.done * 100).checked_div(self.total).unwrap_or(100);
        self.cell.stream(
            StreamName::Stderr,
            &format!(
                "\r{} {} {} / {} ({percent}%){end}",
                self.verb,
                self.name,
                super::listing::human_size(self.done),
                super::listing::human_size(self.total)
            ),
        );
    }

    fn finish(&mut self) {
        if self.last.is_some() {
            self.show("\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_bucket_and_prefix() {
        let env = Env::new();
        let remote = Remote::from_url("s3://runs/hw2/first/", &env).unwrap();
        assert_eq!(remote.bucket, "runs");
        assert_eq!(remote.prefix, "hw2/first");
        assert_eq!(remote.url(), "s3://runs/hw2/first");
        assert_eq!(
            remote.key("ckpt-000001/MANIFEST.json").as_ref(),
            "hw2/first/ckpt-000001/MANIFEST.json"
        );
        let bare = Remote::from_url("s3://runs", &env).unwrap();
        assert_eq!(bare.key("x").as_ref(), "x");
        assert!(Remote::from_url("s3:///prefix", &env).is_err());
        assert!(Remote::from_url("s3://b/../x", &env).is_err());
    }
}
