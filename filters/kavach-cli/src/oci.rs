//! Builds OCI image layouts for the wasm modules, without a container engine.
//!
//! The image is the "compat" variant that Istio's `WasmPlugin` and Envoy Gateway pull: one
//! `application/vnd.oci.image.layer.v1.tar+gzip` layer holding a single file, `plugin.wasm`, and
//! the annotation `module.wasm.image/variant: compat`. Everything is deterministic (tar and gzip
//! headers carry no time, owner or host; JSON is written in a fixed order), so the same module
//! gives the same manifest digest on every machine.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use flate2::Compression;
use flate2::GzBuilder;
use serde_json::json;
use sha2::{Digest, Sha256};

pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const VARIANT_ANNOTATION: &str = "module.wasm.image/variant";

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A ustar archive with one regular file, mode 0644, owned by 0:0, mtime 0.
fn tar_one_file(name: &str, content: &[u8]) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, field: &[u8]| {
        h[at..at + field.len()].copy_from_slice(field);
    };
    if name.len() > 100 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "file name too long for ustar",
        ));
    }
    put(&mut header, 0, name.as_bytes());
    put(&mut header, 100, b"0000644\0");
    put(&mut header, 108, b"0000000\0");
    put(&mut header, 116, b"0000000\0");
    put(
        &mut header,
        124,
        format!("{:011o}\0", content.len()).as_bytes(),
    );
    put(&mut header, 136, b"00000000000\0");
    put(&mut header, 156, b"0");
    put(&mut header, 257, b"ustar\0");
    put(&mut header, 263, b"00");
    // The checksum is computed with its own field read as spaces.
    put(&mut header, 148, b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    put(&mut header, 148, format!("{sum:06o}\0 ").as_bytes());
    let mut out = Vec::with_capacity(512 + content.len() + 1536);
    out.extend_from_slice(&header);
    out.extend_from_slice(content);
    let pad = (512 - content.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
    out.extend(std::iter::repeat_n(0u8, 1024));
    Ok(out)
}

fn gzip(bytes: &[u8]) -> io::Result<Vec<u8>> {
    // mtime 0 and no file name, so the bytes depend on the content only.
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    gz.write_all(bytes)?;
    gz.finish()
}

/// What was written.
pub struct Built {
    pub manifest_digest: String,
    pub layer_digest: String,
    pub wasm_sha256: String,
}

fn write_blob(dir: &Path, bytes: &[u8]) -> io::Result<String> {
    let digest = sha256_hex(bytes);
    fs::write(dir.join("blobs/sha256").join(&digest), bytes)?;
    Ok(digest)
}

/// Writes an OCI image layout for `wasm` at `out` (replacing it), tagged `tag`.
pub fn build(wasm: &[u8], out: &Path, name: &str, tag: &str, source: &str) -> io::Result<Built> {
    if out.exists() {
        fs::remove_dir_all(out)?;
    }
    fs::create_dir_all(out.join("blobs/sha256"))?;
    fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;

    let tar = tar_one_file("plugin.wasm", wasm)?;
    let layer = gzip(&tar)?;
    let layer_digest = write_blob(out, &layer)?;

    let annotations = json!({
        VARIANT_ANNOTATION: "compat",
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.version": tag,
        "org.opencontainers.image.source": source,
    });
    let config = json!({
        "architecture": "wasm",
        "os": "wasip1",
        "config": { "Labels": { VARIANT_ANNOTATION: "compat" } },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&tar))] },
    });
    let config = serde_json::to_vec(&config).map_err(io::Error::other)?;
    let config_digest = write_blob(out, &config)?;

    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": { "mediaType": CONFIG_MEDIA_TYPE, "digest": format!("sha256:{config_digest}"), "size": config.len() },
        "layers": [ { "mediaType": LAYER_MEDIA_TYPE, "digest": format!("sha256:{layer_digest}"), "size": layer.len() } ],
        "annotations": annotations,
    });
    let manifest = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
    let manifest_digest = write_blob(out, &manifest)?;

    let index = json!({
        "schemaVersion": 2,
        "manifests": [ {
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        } ],
    });
    fs::write(
        out.join("index.json"),
        serde_json::to_vec(&index).map_err(io::Error::other)?,
    )?;
    Ok(Built {
        manifest_digest: format!("sha256:{manifest_digest}"),
        layer_digest: format!("sha256:{layer_digest}"),
        wasm_sha256: sha256_hex(wasm),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_is_a_valid_single_file_tar() {
        let tar = tar_one_file("plugin.wasm", b"\0asm\x01\0\0\0").unwrap();
        assert_eq!(tar.len(), 512 + 512 + 1024);
        assert_eq!(&tar[0..11], b"plugin.wasm");
        assert_eq!(&tar[257..263], b"ustar\0");
        // Checksum: sum of header bytes with the checksum field as spaces.
        let mut h = tar[..512].to_vec();
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        h[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, h.iter().map(|b| u32::from(*b)).sum::<u32>());
        assert_eq!(&tar[512..520], b"\0asm\x01\0\0\0");
    }

    #[test]
    fn the_same_module_gives_the_same_digest() {
        let base = std::env::temp_dir().join(format!("kavach-oci-unit-{}", std::process::id()));
        let a = build(b"\0asm\x01\0\0\0", &base.join("a"), "m", "0.1.0", "src").unwrap();
        let b = build(b"\0asm\x01\0\0\0", &base.join("b"), "m", "0.1.0", "src").unwrap();
        let c = build(b"\0asm\x01\0\0\x01", &base.join("c"), "m", "0.1.0", "src").unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_ne!(a.manifest_digest, c.manifest_digest);
        fs::remove_dir_all(base).unwrap();
    }
}
