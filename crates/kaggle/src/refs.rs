//! Names of competitions and datasets as users type them: a slug
//! (`titanic`, `owner/slug`, `owner/slug/3`) or the page's URL
//! (`https://www.kaggle.com/competitions/titanic/data`,
//! `https://www.kaggle.com/c/titanic`,
//! `https://www.kaggle.com/datasets/owner/slug/versions/3`), which is what the
//! listings print and what people copy from the browser.

/// The path segments of a kaggle.com URL, or `None` if `input` is no URL.
fn url_segments(input: &str) -> Option<Vec<String>> {
    let lower = input.to_ascii_lowercase();
    let with_scheme = if lower.starts_with("http://") || lower.starts_with("https://") {
        input.to_owned()
    } else if lower.starts_with("www.kaggle.com/") || lower.starts_with("kaggle.com/") {
        format!("https://{input}")
    } else {
        return None;
    };
    let url = reqwest::Url::parse(&with_scheme).ok()?;
    Some(
        url.path_segments()?
            .filter(|segment| !segment.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

fn valid_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && slug != "."
        && slug != ".."
}

/// A competition slug from a slug or a competition URL.
pub fn competition(input: &str) -> Result<String, String> {
    let input = input.trim();
    let slug = match url_segments(input) {
        Some(segments) => {
            let position = segments
                .iter()
                .position(|segment| segment == "competitions" || segment == "c");
            match position.and_then(|at| segments.get(at + 1)) {
                Some(slug) => slug.clone(),
                None => {
                    return Err(format!(
                        "`{input}` is not a competition URL (expected https://www.kaggle.com/competitions/NAME)"
                    ));
                }
            }
        }
        None => input.to_owned(),
    };
    if valid_slug(&slug) {
        Ok(slug)
    } else {
        Err(format!(
            "`{input}` is not a competition name (the last part of https://www.kaggle.com/competitions/NAME)"
        ))
    }
}

/// A dataset: `owner/slug`, optionally a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub owner: String,
    pub slug: String,
    pub version: Option<u64>,
}

impl Dataset {
    pub fn reference(&self) -> String {
        format!("{}/{}", self.owner, self.slug)
    }

    pub fn url(&self) -> String {
        match self.version {
            Some(version) => format!(
                "https://www.kaggle.com/datasets/{}/{}/versions/{version}",
                self.owner, self.slug
            ),
            None => format!(
                "https://www.kaggle.com/datasets/{}/{}",
                self.owner, self.slug
            ),
        }
    }
}

/// A dataset from `owner/slug[/version]` or a dataset URL.
pub fn dataset(input: &str) -> Result<Dataset, String> {
    let input = input.trim();
    let problem = || {
        format!(
            "Dataset must be given as OWNER/SLUG[/VERSION] or its URL (https://www.kaggle.com/datasets/OWNER/SLUG), not `{input}`"
        )
    };
    let parts: Vec<String> = match url_segments(input) {
        Some(segments) => {
            let at = segments
                .iter()
                .position(|segment| segment == "datasets")
                .ok_or_else(problem)?;
            let mut parts: Vec<String> = segments[at + 1..].iter().take(2).cloned().collect();
            if segments.get(at + 3).map(String::as_str) == Some("versions")
                && let Some(version) = segments.get(at + 4)
            {
                parts.push(version.clone());
            }
            parts
        }
        None => input.split('/').map(str::to_owned).collect(),
    };
    match parts.as_slice() {
        [owner, slug] | [owner, slug, _] if valid_slug(owner) && valid_slug(slug) => {
            let version = match parts.get(2) {
                Some(version) => Some(version.parse::<u64>().map_err(|_| problem())?),
                None => None,
            };
            Ok(Dataset {
                owner: owner.clone(),
                slug: slug.clone(),
                version,
            })
        }
        _ => Err(problem()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn competitions_from_slugs_and_urls() {
        assert_eq!(competition("titanic").unwrap(), "titanic");
        for url in [
            "https://www.kaggle.com/competitions/titanic",
            "https://www.kaggle.com/competitions/titanic/data",
            "https://www.kaggle.com/c/titanic/rules?x=1",
            "www.kaggle.com/competitions/titanic/",
        ] {
            assert_eq!(competition(url).unwrap(), "titanic", "{url}");
        }
        assert!(competition("https://www.kaggle.com/datasets/a/b").is_err());
        assert!(competition("two words").is_err());
        assert!(competition("../etc").is_err());
    }

    #[test]
    fn datasets_from_references_and_urls() {
        let plain = dataset("zillow/zecon").unwrap();
        assert_eq!(plain.reference(), "zillow/zecon");
        assert_eq!(plain.version, None);
        assert_eq!(dataset("zillow/zecon/7").unwrap().version, Some(7));
        let url = dataset("https://www.kaggle.com/datasets/zillow/zecon/versions/3").unwrap();
        assert_eq!(
            (url.owner.as_str(), url.slug.as_str(), url.version),
            ("zillow", "zecon", Some(3))
        );
        assert_eq!(
            url.url(),
            "https://www.kaggle.com/datasets/zillow/zecon/versions/3"
        );
        assert!(dataset("zecon").is_err());
        assert!(dataset("a/b/c/d").is_err());
        assert!(dataset("a/b/latest").is_err());
    }
}
