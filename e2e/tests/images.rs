//! The images `make images` writes to `target/images/<name>.tar` (docker-archives that `ctr
//! images import` loads by name): each is named as the chart (or the node) pulls it, runs as
//! the user the chart's securityContext expects, exposes the chart's ports, and holds exactly
//! the static binary that was just built, and nothing else.
//!
//! Needs `make images` first (`make test` runs it); a missing archive fails the test, naming
//! the command. Needs helm for the chart's render (`make helm`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;
use trafficmap_e2e::chart::{CONFIG_RELEASE, documents, find, template};
use trafficmap_e2e::cluster::repo_root;

/// Where the musl release binaries are built.
const MUSL_RELEASE: &str = "target/x86_64-unknown-linux-musl/release";
/// Where `make images` builds pause and CoreDNS.
const IMAGE_BINS: &str = "target/images/bin";
/// The security.capability xattr of CoreDNS's binary: CAP_NET_BIND_SERVICE, permitted and
/// effective (vfs_cap_data revision 2).
const NET_BIND_SERVICE: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// One file of the image's layer.
struct File {
    mode: u32,
    bytes: Vec<u8>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// An image as its archive holds it.
struct Image {
    archive: PathBuf,
    tags: Vec<String>,
    config: Value,
    files: BTreeMap<String, File>,
}

impl Image {
    /// Opens `target/images/<name>.tar`; panics, saying to run `make images`, when it is missing.
    fn open(name: &str) -> Image {
        let archive = repo_root()
            .join("target/images")
            .join(format!("{name}.tar"));
        let data = std::fs::read(&archive).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: build the images first with `make images` (`make test` does)",
                archive.display()
            )
        });
        let entries = tar_entries(&data, &archive);
        let manifest: Value = serde_json::from_slice(&entries["manifest.json"]).expect("JSON");
        let [manifest] = manifest.as_array().expect("a list").as_slice() else {
            panic!(
                "{}: manifest.json lists more than one image",
                archive.display()
            );
        };
        let config_name = manifest["Config"].as_str().expect("Config");
        let config: Value = serde_json::from_slice(&entries[config_name]).expect("config JSON");
        let layers = manifest["Layers"].as_array().expect("Layers");
        assert_eq!(layers.len(), 1, "{}: one layer", archive.display());
        let compressed = &entries[layers[0].as_str().expect("layer name")];
        let mut layer = Vec::new();
        flate2::read::GzDecoder::new(compressed.as_slice())
            .read_to_end(&mut layer)
            .expect("the layer is gzip");
        let digest = ring::digest::digest(&ring::digest::SHA256, &layer);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            config.pointer("/rootfs/diff_ids"),
            Some(&serde_json::json!([format!("sha256:{hex}")])),
            "{}: the config's diff_id is the layer's (ctr refuses it otherwise)",
            archive.display()
        );
        Image {
            tags: manifest["RepoTags"]
                .as_array()
                .expect("RepoTags")
                .iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect(),
            files: layer_files(&layer, &archive),
            archive,
            config,
        }
    }

    fn text(&self, pointer: &str) -> &str {
        self.config
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{}: no {pointer} in the config", self.archive.display()))
    }

    fn ports(&self) -> BTreeSet<String> {
        self.config
            .pointer("/config/ExposedPorts")
            .and_then(Value::as_object)
            .map(|ports| ports.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Checks what every image shares: one static binary `/<name>` (the entrypoint) with the
    /// bytes of `built`, and the config's platform, working directory and labels.
    fn check_binary(&self, name: &str, built: &Path) -> &File {
        let at = self.archive.display();
        assert_eq!(
            self.config.pointer("/config/Entrypoint"),
            Some(&serde_json::json!([format!("/{name}")])),
            "{at}: entrypoint"
        );
        assert_eq!(self.text("/os"), "linux", "{at}");
        assert_eq!(self.text("/architecture"), "amd64", "{at}");
        assert_eq!(self.text("/config/WorkingDir"), "/", "{at}");
        for label in ["source", "title", "version", "licenses"] {
            let key = format!("org.opencontainers.image.{label}");
            let value = self
                .config
                .pointer("/config/Labels")
                .and_then(|l| l.get(&key));
            assert!(value.is_some(), "{at}: label {key}");
        }
        let names: Vec<&String> = self.files.keys().collect();
        assert_eq!(names, [name], "{at}: the layer holds the binary only");
        let file = &self.files[name];
        assert_eq!(file.mode & 0o777, 0o755, "{at}: /{name} is executable");
        assert_static_elf(&file.bytes, &format!("{at}: /{name}"));
        let fresh = std::fs::read(built)
            .unwrap_or_else(|e| panic!("{}: {e} (`make images` builds it)", built.display()));
        assert!(
            file.bytes == fresh,
            "{at}: /{name} is not {} as just built: the archive is stale, run `make images`",
            built.display()
        );
        file
    }
}

/// The entries of a tar, by path.
fn tar_entries(data: &[u8], origin: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut entries = BTreeMap::new();
    let mut archive = tar::Archive::new(data);
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.unwrap_or_else(|e| panic!("{}: {e}", origin.display()));
        let path = entry.path().expect("a path").to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read an entry");
        entries.insert(path, bytes);
    }
    entries
}

/// The files of a layer, by path without its leading `/`, with their modes and xattrs.
fn layer_files(layer: &[u8], origin: &Path) -> BTreeMap<String, File> {
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(layer);
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.unwrap_or_else(|e| panic!("{}: {e}", origin.display()));
        let path = entry.path().expect("a path").to_string_lossy().into_owned();
        let path = path.trim_start_matches('/').to_string();
        let mut xattrs = BTreeMap::new();
        if let Some(extensions) = entry.pax_extensions().expect("PAX records") {
            for extension in extensions {
                let extension = extension.expect("a PAX record");
                if let Some(name) = extension
                    .key()
                    .ok()
                    .and_then(|k| k.strip_prefix("SCHILY.xattr."))
                {
                    xattrs.insert(name.to_string(), extension.value_bytes().to_vec());
                }
            }
        }
        let mode = entry.header().mode().expect("a mode");
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read a file");
        files.insert(
            path,
            File {
                mode,
                bytes,
                xattrs,
            },
        );
    }
    files
}

/// Panics unless `bytes` is a 64-bit x86 ELF executable with no program interpreter (static).
fn assert_static_elf(bytes: &[u8], what: &str) {
    assert!(
        bytes.len() > 64 && bytes.starts_with(b"\x7fELF"),
        "{what}: not ELF"
    );
    assert_eq!(bytes[4], 2, "{what}: not 64-bit");
    assert_eq!(
        u16::from_le_bytes([bytes[18], bytes[19]]),
        0x3e,
        "{what}: not x86_64"
    );
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes"));
    let phoff = usize::try_from(phoff).expect("fits");
    let (entry_size, count) = (u16_at(54), u16_at(56));
    for i in 0..count {
        let at = phoff + i * entry_size;
        let kind = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        // PT_INTERP: the binary needs a dynamic loader, which the image does not have.
        assert_ne!(kind, 3, "{what}: dynamically linked (has PT_INTERP)");
    }
}

/// The chart's default render (release `trafficmap`), with one object of it.
fn rendered(kind: &str, name: &str) -> Value {
    let text = template(CONFIG_RELEASE, CONFIG_RELEASE, &[]).expect("helm template succeeds");
    let objects = documents(&text, "helm template").expect("helm renders YAML");
    find(&objects, kind, name)
        .unwrap_or_else(|| panic!("the chart renders {kind} {name}"))
        .clone()
}

fn number(value: &Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} is set"))
}

/// `containerPort/protocol` of each port of the first container, as ExposedPorts spells them.
fn container_ports(workload: &Value) -> BTreeSet<String> {
    workload
        .pointer("/spec/template/spec/containers/0/ports")
        .and_then(Value::as_array)
        .expect("the container has ports")
        .iter()
        .map(|p| {
            let protocol = p["protocol"].as_str().unwrap_or("TCP").to_lowercase();
            format!("{}/{protocol}", number(p, "/containerPort"))
        })
        .collect()
}

fn image_of(workload: &Value) -> String {
    workload
        .pointer("/spec/template/spec/containers/0/image")
        .and_then(Value::as_str)
        .expect("the container has an image")
        .to_string()
}

fn built(dir: &str, name: &str) -> PathBuf {
    repo_root().join(dir).join(name)
}

#[test]
fn operator_image_is_the_charts_non_root_user_ports_and_fresh_binary() {
    let operator = rendered("Deployment", "trafficmap-operator");
    let image = Image::open("trafficmap-operator");
    image.check_binary(
        "trafficmap-operator",
        &built(MUSL_RELEASE, "trafficmap-operator"),
    );
    assert_eq!(
        image.tags,
        [image_of(&operator)],
        "the chart's default image"
    );
    let pod = "/spec/template/spec/securityContext";
    let uid = number(&operator, &format!("{pod}/runAsUser"));
    let gid = number(&operator, &format!("{pod}/runAsGroup"));
    assert_ne!(uid, 0, "the chart runs the operator as non-root");
    assert_eq!(
        image.text("/config/User"),
        format!("{uid}:{gid}"),
        "the image's user is the chart's runAsUser:runAsGroup"
    );
    assert_eq!(
        image.ports(),
        container_ports(&operator),
        "the chart's ports"
    );
}

#[test]
fn sniffer_image_is_the_charts_user_ports_and_fresh_binary() {
    let sniffer = rendered("DaemonSet", "trafficmap-sniffer");
    let image = Image::open("trafficmap-sniffer");
    image.check_binary(
        "trafficmap-sniffer",
        &built(MUSL_RELEASE, "trafficmap-sniffer"),
    );
    assert_eq!(
        image.tags,
        [image_of(&sniffer)],
        "the chart's default image"
    );
    let uid = number(
        &sniffer,
        "/spec/template/spec/containers/0/securityContext/runAsUser",
    );
    let user = image.text("/config/User");
    assert_eq!(
        user.split(':').next(),
        Some(uid.to_string().as_str()),
        "the image's user {user} is the chart's runAsUser"
    );
    assert_eq!(
        image.ports(),
        container_ports(&sniffer),
        "the chart's ports"
    );
}

#[test]
fn play_image_holds_the_fresh_binary() {
    let image = Image::open("trafficmap-play");
    image.check_binary("trafficmap-play", &built(MUSL_RELEASE, "trafficmap-play"));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        image.tags,
        [format!("ghcr.io/trafficmap/trafficmap-play:{version}")]
    );
}

#[test]
fn pause_image_runs_as_upstreams_user() {
    let image = Image::open("pause");
    image.check_binary("pause", &built(IMAGE_BINS, "pause"));
    assert_eq!(image.text("/config/User"), "65535:65535");
    let [tag] = image.tags.as_slice() else {
        panic!("one name: {:?}", image.tags);
    };
    assert!(tag.starts_with("ghcr.io/trafficmap/pause:v1."), "{tag}");
}

#[test]
fn coredns_image_binds_port_53_as_non_root() {
    let image = Image::open("coredns");
    let binary = image.check_binary("coredns", &built(IMAGE_BINS, "coredns"));
    let user = image.text("/config/User");
    assert!(!user.starts_with("0:"), "non-root: {user}");
    assert_eq!(
        binary.xattrs.get("security.capability").map(Vec::as_slice),
        Some(NET_BIND_SERVICE.as_slice()),
        "CAP_NET_BIND_SERVICE on /coredns, so that a non-root user binds port 53"
    );
    let ports: Vec<String> = image.ports().into_iter().collect();
    assert_eq!(ports, ["53/tcp", "53/udp"]);
    let [tag] = image.tags.as_slice() else {
        panic!("one name: {:?}", image.tags);
    };
    assert!(tag.starts_with("ghcr.io/trafficmap/coredns:v1."), "{tag}");
}

#[test]
#[should_panic(expected = "dynamically linked")]
fn a_dynamically_linked_binary_is_caught() {
    let this = std::env::current_exe().expect("the test binary's path");
    let bytes = std::fs::read(&this).expect("read the test binary (linked against glibc)");
    assert_static_elf(&bytes, &this.display().to_string());
}
