//! The committed CRD YAML must be exactly what the types generate (`make crds` rewrites it).

use std::path::Path;

#[test]
fn committed_crd_yaml_matches_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("yaml");
    for (name, generated) in trafficmap_api::crdgen::render_all().expect("CRDs render") {
        let path = dir.join(&name);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} is missing ({e}); run `make crds`", path.display()));
        assert!(
            committed == generated,
            "{} is stale: run `make crds` and commit the result",
            path.display()
        );
    }
}
