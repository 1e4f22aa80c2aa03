//! Signed manifests for checkpoints that leave the machine.
//!
//! Object storage has no owner a restore could check, so a checkpoint
//! uploaded by ferrolab carries an HMAC-SHA256 of its manifest (which holds
//! every file's hash) made with the user's checkpoint key. A restore treats a
//! downloaded checkpoint as the user's own only if that signature verifies.
//!
//! The key is `$FERROLAB_CHECKPOINT_KEY` (set the same value on every VM that
//! should trust the others' checkpoints), else `~/.config/ferrolab/checkpoint.key`,
//! created on first use with 32 random bytes, mode 0600 in a 0700 folder.
//! It never appears in output or logs.

use super::state::Env;
use hmac::{KeyInit, Mac};
use serde_json::Value;
use std::path::PathBuf;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub const KEY_ENV: &str = "FERROLAB_CHECKPOINT_KEY";
const FIELD: &str = "signature";

fn key_file(env: &Env) -> Option<PathBuf> {
    let config = crate::paths::base_dir_from(crate::paths::Base::Config, |name| {
        env.get(name).map(std::ffi::OsString::from)
    })?;
    Some(config.join("ferrolab").join("checkpoint.key"))
}

/// The user's checkpoint key, created if there is none yet.
fn key(env: &Env) -> Result<Vec<u8>, String> {
    if let Some(value) = env.get(KEY_ENV)
        && !value.trim().is_empty()
    {
        return Ok(value.trim().as_bytes().to_vec());
    }
    let path = key_file(env).ok_or("no HOME to keep the checkpoint key in")?;
    if let Ok(text) = std::fs::read_to_string(&path)
        && !text.trim().is_empty()
    {
        return Ok(text.trim().as_bytes().to_vec());
    }
    let parent = path.parent().ok_or("no folder for the checkpoint key")?;
    ferrolab_checkpoint::commit::create_private_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let random: Vec<u8> = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
        .iter()
        .flat_map(|id| *id.as_bytes())
        .collect();
    let fresh = hex::encode(random);
    // Written aside and linked into place: two kernels starting at once agree.
    let temp = parent.join(format!(".checkpoint.key.{}", std::process::id()));
    {
        use std::io::Write;
        let mut file = ferrolab_checkpoint::commit::create_private_file(&temp)
            .map_err(|e| format!("cannot write {}: {e}", temp.display()))?;
        file.write_all(fresh.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", temp.display()))?;
    }
    let linked = std::fs::hard_link(&temp, &path);
    let _ = std::fs::remove_file(&temp);
    if linked.is_err() {
        // Another kernel created it first: use theirs.
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        return Ok(text.trim().as_bytes().to_vec());
    }
    Ok(fresh.into_bytes())
}

fn canonical(manifest: &Value) -> Vec<u8> {
    let mut unsigned = manifest.clone();
    if let Some(object) = unsigned.as_object_mut() {
        object.remove(FIELD);
    }
    unsigned.to_string().into_bytes()
}

fn mac(key: &[u8], manifest: &Value) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&canonical(manifest));
    mac
}

/// Adds the signature to a manifest (replacing any).
pub fn sign(manifest: &mut Value, env: &Env) -> Result<(), String> {
    let key = key(env)?;
    let tag = hex::encode(mac(&key, manifest).finalize().into_bytes());
    if let Some(object) = manifest.as_object_mut() {
        object.insert(FIELD.into(), Value::String(tag));
    }
    Ok(())
}

/// `Ok` when the manifest was signed with this user's key; else why not.
pub fn verify(manifest: &Value, env: &Env) -> Result<(), String> {
    let Some(tag) = manifest.get(FIELD).and_then(Value::as_str) else {
        return Err("it carries no signature".into());
    };
    let tag = hex::decode(tag).map_err(|_| "its signature is malformed".to_owned())?;
    let key = key(env)?;
    mac(&key, manifest).verify_slice(&tag).map_err(|_| {
        format!(
            "its signature was not made with your checkpoint key (set {KEY_ENV} to the same value on every machine whose checkpoints you trust)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_signed_manifest_verifies_and_any_change_breaks_it() {
        let env: Env = [(KEY_ENV.to_owned(), "test-key-for-signatures".to_owned())].into();
        let other: Env = [(KEY_ENV.to_owned(), "another-machine".to_owned())].into();
        let mut manifest = json!({"name": "ckpt-000001", "files": [{"path": "vars/x", "size": 3}]});
        assert!(
            verify(&manifest, &env)
                .unwrap_err()
                .contains("no signature")
        );
        sign(&mut manifest, &env).unwrap();
        assert_eq!(verify(&manifest, &env), Ok(()));
        assert!(verify(&manifest, &other).is_err());
        let text = manifest.to_string();
        let reparsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(verify(&reparsed, &env), Ok(()));
        let mut tampered = reparsed.clone();
        tampered["files"][0]["size"] = json!(4);
        assert!(
            verify(&tampered, &env)
                .unwrap_err()
                .contains("not made with your")
        );
        let mut forged = tampered.clone();
        forged["signature"] = json!("00".repeat(32));
        assert!(verify(&forged, &env).is_err());
    }
}
