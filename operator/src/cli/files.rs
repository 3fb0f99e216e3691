//! Local files: ClientIntents and NetworkPolicies read for `diff -f`, output written by
//! `export` and `visualize`.

use std::path::{Path, PathBuf};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Deserialize;
use trafficmap_api::ClientIntents;

use crate::cli::diff::parse_intents;
use crate::cli::error::CliError;

/// File extensions `diff -f DIR` reads.
const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// The ClientIntents in a file, or in the `.yaml`/`.yml`/`.json` files of a directory (not
/// recursive, in name order).
pub fn read_intents(path: &Path) -> Result<Vec<ClientIntents>, CliError> {
    let mut intents = Vec::new();
    for (file, text) in manifest_texts(path)? {
        let parsed = parse_intents(&text).map_err(|message| CliError::Parse {
            path: file.clone(),
            message,
        })?;
        intents.extend(parsed);
    }
    Ok(intents)
}

/// The NetworkPolicies in a file or directory (as [`read_intents`]); other kinds are skipped.
pub fn read_network_policies(path: &Path) -> Result<Vec<NetworkPolicy>, CliError> {
    let mut policies = Vec::new();
    for (file, text) in manifest_texts(path)? {
        policies.extend(
            parse_network_policies(&text).map_err(|message| CliError::Parse {
                path: file.clone(),
                message,
            })?,
        );
    }
    Ok(policies)
}

/// The NetworkPolicies of a multi-document YAML or JSON text (`v1` Lists unwrapped).
pub fn parse_network_policies(text: &str) -> Result<Vec<NetworkPolicy>, String> {
    fn collect(value: serde_json::Value, found: &mut Vec<NetworkPolicy>) -> Result<(), String> {
        match value {
            serde_json::Value::Array(items) => {
                items.into_iter().try_for_each(|v| collect(v, found))
            }
            serde_json::Value::Object(ref map) => match map.get("kind").and_then(|k| k.as_str()) {
                Some("List") => collect(map.get("items").cloned().unwrap_or_default(), found),
                Some("NetworkPolicy") => {
                    found.push(
                        serde_json::from_value(value).map_err(|e| format!("NetworkPolicy: {e}"))?,
                    );
                    Ok(())
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
    let mut found = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(doc).map_err(|e| e.to_string())?;
        collect(value, &mut found)?;
    }
    Ok(found)
}

/// `(file, text)` of a file, or of the manifest files of a directory in name order.
fn manifest_texts(path: &Path) -> Result<Vec<(PathBuf, String)>, CliError> {
    let metadata = std::fs::metadata(path).map_err(CliError::io(path))?;
    let files = if metadata.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(CliError::io(path))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .and_then(|x| x.to_str())
                        .is_some_and(|x| MANIFEST_EXTENSIONS.contains(&x))
            })
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).map_err(CliError::io(&file))?;
            Ok((file, text))
        })
        .collect()
}

/// Writes `content` to `path`, creating its directory.
pub fn write_file(path: &Path, content: &[u8]) -> Result<(), CliError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(CliError::io(parent))?;
    }
    std::fs::write(path, content).map_err(CliError::io(path))
}
