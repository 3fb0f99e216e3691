//! The Helm chart (`chart/`) and its plain-manifest twin (`config/`): finding helm, running it
//! and kubectl, and reading what they render as objects that compare by meaning, not by text.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::Value;

use crate::cluster::{kubeconfig_path, repo_root};
use crate::{Error, Result};

/// Environment variable naming the helm binary to use.
pub const HELM_ENV: &str = "HELM";
/// Where `e2e/tools/install-helm.sh` puts helm by default.
pub const HELM_INSTALL_PATH: &str = "target/tools/helm";
/// The chart's folder.
pub const CHART_DIR: &str = "chart";
/// Release name and namespace `config/` is rendered with (`make config`).
pub const CONFIG_RELEASE: &str = "trafficmap";

/// helm: `$HELM`, else `target/tools/helm`, else `helm` on PATH.
pub fn helm_path() -> Result<PathBuf> {
    let missing = |why: String| {
        Error::Exited(format!(
            "helm is missing ({why}): run `bash e2e/tools/install-helm.sh` (or `make helm`; CI \
             does) to install it at {HELM_INSTALL_PATH}, or set ${HELM_ENV}"
        ))
    };
    if let Some(path) = std::env::var_os(HELM_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(missing(format!("${HELM_ENV} is {}", path.display())));
        }
        return Ok(path);
    }
    let installed = repo_root().join(HELM_INSTALL_PATH);
    if installed.exists() {
        return Ok(installed);
    }
    let on_path = Command::new("helm")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return Ok(PathBuf::from("helm"));
    }
    Err(missing(format!("not at {HELM_INSTALL_PATH}, not on PATH")))
}

/// What a finished command printed, and whether it succeeded.
#[derive(Clone, Debug)]
pub struct CommandOutput {
    /// Exit status was 0.
    pub success: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CommandOutput {
    /// Stdout when the command succeeded, else an error with what it said.
    pub fn ok(self, what: &str) -> Result<String> {
        if self.success {
            Ok(self.stdout)
        } else {
            Err(Error::Exited(format!(
                "{what} failed: {}{}",
                self.stdout, self.stderr
            )))
        }
    }
}

/// Runs `program args`, feeding `stdin` when given, against the control plane's kubeconfig.
pub fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<CommandOutput> {
    let shown = format!("{} {}", program.display(), args.join(" "));
    let spawn_error = |e: std::io::Error| Error::Http {
        what: shown.clone(),
        source: Box::new(e),
    };
    let mut child = Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .env("KUBECONFIG", kubeconfig_path())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(spawn_error)?;
    }
    let output = child.wait_with_output().map_err(spawn_error)?;
    Ok(CommandOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Runs helm.
pub fn helm(args: &[&str]) -> Result<CommandOutput> {
    run(&helm_path()?, args, None)
}

/// Runs kubectl.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Result<CommandOutput> {
    run(Path::new("kubectl"), args, stdin)
}

/// `helm template <release> chart --namespace <namespace> --set <set>...`, as text.
pub fn template(release: &str, namespace: &str, sets: &[&str]) -> Result<String> {
    let mut args = vec!["template", release, CHART_DIR, "--namespace", namespace];
    for set in sets {
        args.extend(["--set", set]);
    }
    helm(&args)?.ok("helm template")
}

/// The objects of a (multi-document) YAML stream, as JSON values; empty documents are skipped.
pub fn documents(text: &str, origin: &str) -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).map_err(|e| Error::Manifest {
            path: origin.to_string(),
            source: Box::new(e),
        })?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// `kind/namespace/name` of an object (namespace empty when cluster-scoped).
pub fn identity(object: &Value) -> String {
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    format!(
        "{}/{}/{}",
        text("/kind"),
        text("/metadata/namespace"),
        text("/metadata/name")
    )
}

/// Objects by [`identity`]; a second object with the same identity is an error.
pub fn by_identity(objects: Vec<Value>) -> Result<BTreeMap<String, Value>> {
    let mut map = BTreeMap::new();
    for object in objects {
        let id = identity(&object);
        if map.insert(id.clone(), object).is_some() {
            return Err(Error::Exited(format!("{id} appears twice")));
        }
    }
    Ok(map)
}

/// The one object of `kind` named `name` among `objects`.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects.iter().find(|o| {
        o.pointer("/kind").and_then(Value::as_str) == Some(kind)
            && o.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_skip_empty_ones_and_identity_names_the_object() {
        let text = "---\n# Source: x\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: n\n---\nkind: Namespace\nmetadata:\n  name: n\n";
        let objects = documents(text, "test").expect("parses");
        assert_eq!(objects.len(), 2);
        assert_eq!(identity(&objects[0]), "ConfigMap/n/a");
        assert_eq!(identity(&objects[1]), "Namespace//n");
        let twice = vec![objects[0].clone(), objects[0].clone()];
        assert!(by_identity(twice).is_err());
    }
}
