//! Which checkpoints to keep: the newest `--keep`, plus the best
//! `--keep-best METRIC:min|max:K`. Runs only after a successful commit.
//!
//! Never deleted: the newest valid checkpoint, the one this kernel restored
//! from, anything whose manifest does not parse (not provably ours), and
//! everything when no `--keep` is set.

use super::place::Place;
use super::state::Retention;
use ferrolab_checkpoint::commit::Listed;
use ferrolab_checkpoint::manifest::Depth;
use std::collections::BTreeSet;

/// The names to delete among `listed` (oldest first).
pub fn plan(listed: &[Listed], retention: &Retention, protect: Option<&str>) -> Vec<String> {
    let Some(keep) = retention.keep else {
        return Vec::new();
    };
    let valid: Vec<&Listed> = listed.iter().filter(|l| l.is_valid()).collect();
    let mut kept: BTreeSet<&str> = valid
        .iter()
        .rev()
        .take(keep.max(1))
        .map(|l| l.name.as_str())
        .collect();
    if let Some(best) = &retention.keep_best {
        let mut scored: Vec<(&Listed, f64)> = valid
            .iter()
            .filter_map(|l| {
                let value = *l.manifest.as_ref().ok()?.metrics.get(&best.metric)?;
                Some((*l, value))
            })
            .filter(|(_, value)| value.is_finite())
            .collect();
        scored.sort_by(|a, b| {
            if best.minimize {
                a.1.total_cmp(&b.1)
            } else {
                b.1.total_cmp(&a.1)
            }
        });
        kept.extend(scored.iter().take(best.count).map(|(l, _)| l.name.as_str()));
    }
    valid
        .iter()
        .filter(|l| !kept.contains(l.name.as_str()))
        .filter(|l| protect != Some(l.name.as_str()))
        .map(|l| l.name.clone())
        .collect()
}

/// Applies the policy at `place`; returns the names removed.
pub fn apply(place: &Place, retention: &Retention, protect: Option<&str>) -> Vec<String> {
    if retention.keep.is_none() {
        return Vec::new();
    }
    let Ok(listed) = place.list(Depth::Sizes, &|| false) else {
        return Vec::new();
    };
    let doomed = plan(&listed, retention, protect);
    listed
        .iter()
        .filter(|l| doomed.contains(&l.name))
        .filter(|l| place.remove(l).is_ok())
        .map(|l| l.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::state::KeepBest;
    use super::*;
    use ferrolab_checkpoint::Manifest;
    use std::path::PathBuf;

    fn listed(number: u64, loss: Option<f64>, valid: bool) -> Listed {
        let name = format!("ckpt-{number:06}");
        let mut manifest = Manifest {
            name: name.clone(),
            ..Manifest::default()
        };
        if let Some(loss) = loss {
            manifest.metrics.insert("loss".into(), loss);
        }
        Listed {
            path: PathBuf::from("/c").join(&name),
            name,
            number,
            manifest: if valid {
                Ok(manifest)
            } else {
                Err("bad".into())
            },
        }
    }

    #[test]
    fn keeps_newest_n_plus_best_k_and_never_the_protected_or_invalid() {
        let all = vec![
            listed(1, Some(0.9), true),
            listed(2, Some(0.1), true),
            listed(3, Some(0.5), true),
            listed(4, None, false),
            listed(5, Some(0.7), true),
            listed(6, Some(0.8), true),
        ];
        let none = Retention::default();
        assert!(
            plan(&all, &none, None).is_empty(),
            "no --keep: keep everything"
        );
        let keep2 = Retention {
            keep: Some(2),
            keep_best: None,
        };
        assert_eq!(
            plan(&all, &keep2, None),
            ["ckpt-000001", "ckpt-000002", "ckpt-000003"]
        );
        let best = Retention {
            keep: Some(1),
            keep_best: Some(KeepBest {
                metric: "loss".into(),
                minimize: true,
                count: 1,
            }),
        };
        assert_eq!(
            plan(&all, &best, None),
            ["ckpt-000001", "ckpt-000003", "ckpt-000005"]
        );
        assert_eq!(
            plan(&all, &best, Some("ckpt-000001")),
            ["ckpt-000003", "ckpt-000005"]
        );
        let zero = Retention {
            keep: Some(0),
            keep_best: None,
        };
        assert!(!plan(&all, &zero, None).contains(&"ckpt-000006".to_owned()));
    }
}
