//! OCI images of the modules: reproducible, and intact through a real registry.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use kavach_integration::envoy::repo_root;
use kavach_integration::registry::{skopeo, Registry};
use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kavach-oci-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The modules in dist/ (every filter and the bundle).
fn modules() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(repo_root().join("dist"))
        .expect("dist/ is missing: run scripts/build.sh")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".wasm").map(str::to_string))
        .collect();
    names.sort();
    assert!(names.len() >= 2, "{names:?}");
    names
}

/// Runs `kavach oci`; returns the manifest digest it printed.
fn build_layout(module: &str, out: &Path) -> String {
    let wasm = repo_root().join("dist").join(format!("{module}.wasm"));
    let o = Command::new(repo_root().join("target/release/kavach"))
        .args([
            "oci",
            wasm.to_str().unwrap(),
            out.to_str().unwrap(),
            module,
            "0.1.0",
        ])
        .output()
        .expect("target/release/kavach is missing: run scripts/build.sh");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "manifest")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in {text}"))
        .to_string()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

/// The files (name, content) of a tar archive.
fn untar(mut bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    while bytes.len() >= 512 && bytes[..512].iter().any(|b| *b != 0) {
        let header = &bytes[..512];
        let name = String::from_utf8_lossy(&header[..100])
            .trim_end_matches('\0')
            .to_string();
        let size_text = String::from_utf8_lossy(&header[124..136])
            .trim_matches(['\0', ' '])
            .to_string();
        let size = usize::from_str_radix(&size_text, 8).unwrap();
        files.push((name, bytes[512..512 + size].to_vec()));
        bytes = &bytes[512 + size.div_ceil(512) * 512..];
    }
    files
}

#[test]
fn it_builds_the_same_image_digest_from_the_same_module() {
    let dir = scratch("repro");
    for module in modules() {
        let a = build_layout(&module, &dir.join(format!("{module}-a")));
        let b = build_layout(&module, &dir.join(format!("{module}-b")));
        assert_eq!(a, b, "{module}");
    }
}

#[test]
fn it_round_trips_every_image_through_a_registry_intact() {
    let dir = scratch("registry");
    let registry = Registry::start(&dir.join("registry")).unwrap();
    for module in modules() {
        let layout = dir.join(&module);
        let digest = build_layout(&module, &layout);
        let reference = registry.reference(&format!("kavach/{module}"), "0.1.0");
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:0.1.0", layout.display()),
            &reference,
        ])
        .unwrap_or_else(|e| panic!("{e}\n{}", registry.log()));
        // The registry serves the very manifest we built.
        let remote = skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &reference,
        ])
        .unwrap();
        assert_eq!(remote.trim(), digest, "{module}");

        let pulled = dir.join(format!("{module}-pulled"));
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &reference,
            &format!("oci:{}:0.1.0", pulled.display()),
        ])
        .unwrap();
        let index: Value =
            serde_json::from_slice(&fs::read(pulled.join("index.json")).unwrap()).unwrap();
        let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
        assert_eq!(manifest_digest, digest);
        let manifest: Value = serde_json::from_slice(&blob(&pulled, manifest_digest)).unwrap();
        assert_eq!(
            manifest["annotations"]["module.wasm.image/variant"],
            "compat"
        );
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "{module}: one layer");
        assert_eq!(
            layers[0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob(&pulled, layers[0]["digest"].as_str().unwrap())[..])
            .read_to_end(&mut tar)
            .unwrap();
        let files = untar(&tar);
        assert_eq!(files.len(), 1, "{module}: one file");
        assert_eq!(files[0].0, "plugin.wasm");
        let built = fs::read(repo_root().join("dist").join(format!("{module}.wasm"))).unwrap();
        assert!(
            files[0].1 == built,
            "{module}: plugin.wasm differs from the build"
        );
    }
}
