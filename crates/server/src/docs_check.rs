//! `docs/API.md` keeps up with the code (every route, every config key) and the README's links resolve
//! inside the repository.
//!
//! The routes come from the API's own route table and the keys from the config structs themselves (their
//! serde field lists), so a route or key added later is checked without touching this file; only a new
//! config section must be added to [`section_fields`].

use crate::config::{
    AuthSection, ClusterSection, Config, DeliverySection, IngestSection, LogSection,
    RetentionSection, ServerSection, StorageSection,
};
use figment::providers::Format;
use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A deserializer that only records the field names a struct asks for, then stops.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut names));
    names
}

fn section_fields(section: &str) -> Option<&'static [&'static str]> {
    Some(match section {
        "server" => fields::<ServerSection>(),
        "storage" => fields::<StorageSection>(),
        "auth" => fields::<AuthSection>(),
        "delivery" => fields::<DeliverySection>(),
        "ingest" => fields::<IngestSection>(),
        "retention" => fields::<RetentionSection>(),
        "log" => fields::<LogSection>(),
        "cluster" => fields::<ClusterSection>(),
        _ => return None,
    })
}

/// Every key the server accepts, as `section.key`.
fn config_keys() -> Vec<String> {
    let sections = fields::<Config>();
    assert!(!sections.is_empty(), "Config's fields could not be read");
    let mut keys = Vec::new();
    for section in sections {
        let Some(names) = section_fields(section) else {
            panic!("config section [{section}] is new: add it to section_fields in this file");
        };
        assert!(!names.is_empty(), "[{section}] has no fields?");
        keys.extend(names.iter().map(|k| format!("{section}.{k}")));
    }
    keys
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `section.key` names of docs/API.md's configuration table (its rows start with a key in backticks).
fn documented_keys(doc: &str) -> Vec<String> {
    let start = doc
        .find("\n## Configuration")
        .unwrap_or_else(|| panic!("docs/API.md has no `## Configuration` section"));
    let section = &doc[start + 1..];
    let section = section[2..]
        .find("\n## ")
        .map_or(section, |end| &section[..end + 2]);
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(k, _)| k.to_owned()))
        .collect()
}

#[test]
fn every_config_key_is_documented_with_its_default() {
    let doc = read("docs/API.md");
    let documented = documented_keys(&doc);
    let keys = config_keys();
    let missing: Vec<&String> = keys.iter().filter(|k| !documented.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "config keys missing from the table in docs/API.md (## Configuration): {missing:?}"
    );
    let unknown: Vec<&String> = documented.iter().filter(|k| !keys.contains(k)).collect();
    assert!(
        unknown.is_empty(),
        "docs/API.md documents keys the server does not accept: {unknown:?}"
    );
}

#[test]
fn every_key_the_shipped_config_files_set_is_documented() {
    let doc = read("docs/API.md");
    let documented = documented_keys(&doc);
    for file in [
        "config/default.toml",
        "config/production.toml",
        "config/test.toml",
        "config/cluster.toml",
    ] {
        let path = repo_root().join(file);
        let sections: BTreeMap<String, BTreeMap<String, figment::value::Value>> =
            figment::Figment::from(figment::providers::Toml::file_exact(&path))
                .extract()
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!sections.is_empty(), "{file} sets nothing?");
        for (section, keys) in sections {
            for key in keys.keys() {
                let name = format!("{section}.{key}");
                assert!(
                    documented.contains(&name),
                    "{file} sets `{name}`, which docs/API.md does not document"
                );
            }
        }
    }
}

/// The developers' folder beside the repository, which users do not have. Spelled in two pieces so that
/// grepping the repository for it finds nothing, this check included.
const DEVELOPER_ONLY: &str = concat!("..", "/shared");

/// Whether `doc` names `needle` as a whole, not as the start of a longer path (`GET /webhooks` must not be
/// satisfied by `GET /webhooks/{id}`).
fn names(doc: &str, needle: &str) -> bool {
    doc.match_indices(needle).any(|(at, _)| {
        doc[at + needle.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || "/_{-".contains(c)))
    })
}

#[test]
fn every_route_is_documented() {
    let doc = read("docs/API.md");
    let missing: Vec<String> = buildr_api::ROUTES
        .iter()
        .map(|(method, path)| format!("{} {path}", method.to_uppercase()))
        .filter(|route| !names(&doc, route))
        .collect();
    assert!(!buildr_api::ROUTES.is_empty());
    assert!(
        missing.is_empty(),
        "routes docs/API.md does not describe (write them as `METHOD /path`): {missing:?}"
    );
    assert!(!names("GET /webhooks/{id}", "GET /webhooks"));
}

/// Relative Markdown links (`](target)`) of a document, without their `#anchor`.
fn relative_links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(target, _)| target))
        .filter(|t| !t.contains("://") && !t.starts_with('#') && !t.starts_with("mailto:"))
        .map(|t| t.split('#').next().unwrap_or(t).to_owned())
        .collect()
}

#[test]
fn readme_and_docs_links_resolve_inside_the_repository() {
    for file in [
        "README.md",
        "ARCHITECTURE.md",
        "docs/API.md",
        "tests/data/README.md",
    ] {
        let text = read(file);
        let dir = Path::new(file).parent().unwrap_or(Path::new(""));
        assert!(
            !text.contains(DEVELOPER_ONLY),
            "{file} refers to {DEVELOPER_ONLY}, which a clone of this repository does not have"
        );
        for link in relative_links(&text) {
            let target = repo_root().join(dir).join(&link);
            assert!(
                target.exists(),
                "{file} links to {link}, which does not exist"
            );
        }
    }
    assert!(relative_links(&read("README.md")).contains(&"docs/API.md".to_owned()));
}
