//! Local files: ClientIntents read for `diff -f`, output written by `export` and `visualize`.

use std::path::Path;

use trafficmap_api::ClientIntents;

use crate::cli::diff::parse_intents;
use crate::cli::error::CliError;

/// File extensions `diff -f DIR` reads.
const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// The ClientIntents in a file, or in the `.yaml`/`.yml`/`.json` files of a directory (not
/// recursive, in name order).
pub fn read_intents(path: &Path) -> Result<Vec<ClientIntents>, CliError> {
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
    let mut intents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(CliError::io(&file))?;
        let parsed = parse_intents(&text).map_err(|message| CliError::Parse {
            path: file.clone(),
            message,
        })?;
        intents.extend(parsed);
    }
    Ok(intents)
}

/// Writes `content` to `path`, creating its directory.
pub fn write_file(path: &Path, content: &[u8]) -> Result<(), CliError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(CliError::io(parent))?;
    }
    std::fs::write(path, content).map_err(CliError::io(path))
}
