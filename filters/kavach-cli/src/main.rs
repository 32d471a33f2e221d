//! `kavach`: native tools that go with the filters.
//!
//! ```text
//! kavach verify [FILE|-] [--key-env VAR]          check a stream of audit records
//! kavach oci WASM OUT_DIR NAME TAG                write an OCI image layout of a module
//! kavach validate [--filter NAME] FILE...         check plugin configurations before deploying
//! kavach schema NAME | --write DIR | --check DIR  JSON Schemas of the configurations
//! ```

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use kavach_cli::{oci, validate};
use kavach_core::audit::verify::verify;
use kavach_core::filters::schema;

const USAGE: &str = "usage:
  kavach verify [FILE|-] [--key-env VAR]
      Verifies a stream of Kavach audit records (one per line, chains interleaved).
      Reports the first edited, dropped, reordered or inserted record and exits 1.
      --key-env VAR  the chain key (for HMAC-sealed records) is in environment variable VAR.
  kavach oci WASM OUT_DIR NAME TAG
      Writes an OCI image layout (Istio/Envoy Gateway \"compat\" variant: one tar+gzip layer
      holding plugin.wasm) for the module WASM; prints the manifest digest. Deterministic.
  kavach validate FILE...
      Finds every Kavach plugin configuration in Istio WasmPlugin manifests and Envoy configs
      (YAML) and runs the filter's own configure step on it; prints the line Envoy would log
      for each bad one and exits 1.
  kavach validate --filter NAME FILE...
      FILE is a plugin configuration (JSON) for filter NAME (audit, pci_authz, ..., bundle).
  kavach schema NAME             print the JSON Schema of a filter's configuration
  kavach schema --write DIR      write every schema to DIR/<name>.schema.json
  kavach schema --check DIR      exit 1 if a schema in DIR is not what the code generates";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("verify") => verify_command(&args[1..]),
        Some("oci") => oci_command(&args[1..]),
        Some("validate") => validate_command(&args[1..]),
        Some("schema") => schema_command(&args[1..]),
        Some("-h") | Some("--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn verify_command(args: &[String]) -> ExitCode {
    let mut input: Option<&str> = None;
    let mut key: Option<Vec<u8>> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--key-env" => {
                let Some(var) = it.next() else {
                    eprintln!("--key-env needs a variable name\n{USAGE}");
                    return ExitCode::from(2);
                };
                match std::env::var(var) {
                    Ok(k) if !k.is_empty() => key = Some(k.into_bytes()),
                    _ => {
                        eprintln!("environment variable {var} is not set");
                        return ExitCode::from(2);
                    }
                }
            }
            other if input.is_none() => input = Some(other),
            other => {
                eprintln!("unexpected argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let mut text = String::new();
    let read = match input {
        None | Some("-") => std::io::stdin().read_to_string(&mut text).map(|_| ()),
        Some(path) => std::fs::read_to_string(path).map(|t| text = t),
    };
    if let Err(e) = read {
        eprintln!("cannot read {}: {e}", input.unwrap_or("stdin"));
        return ExitCode::from(2);
    }
    let report = verify(&text, key.as_deref());
    for (chain, last) in &report.chains {
        println!("chain {chain}: seq 0..={last} verified");
    }
    if report.unrecorded > 0 {
        println!(
            "{} line(s) without a record (requests the audit filter did not see)",
            report.unrecorded
        );
    }
    match report.first_problem {
        None => {
            println!(
                "OK: {} record(s) in {} chain(s)",
                report.verified,
                report.chains.len()
            );
            ExitCode::SUCCESS
        }
        Some(f) => {
            println!("FAIL at line {}: {}", f.line, f.problem);
            ExitCode::from(1)
        }
    }
}

fn oci_command(args: &[String]) -> ExitCode {
    let [wasm, out, name, tag] = args else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let bytes = match std::fs::read(wasm) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot read {wasm}: {e}");
            return ExitCode::from(2);
        }
    };
    if !bytes.starts_with(b"\0asm") {
        eprintln!("{wasm} is not a wasm module");
        return ExitCode::from(2);
    }
    let source = format!("kavach {name} {}", env!("CARGO_PKG_VERSION"));
    match oci::build(&bytes, Path::new(out), name, tag, &source) {
        Ok(built) => {
            println!(
                "{out}: {name}:{tag} manifest {} layer {} plugin.wasm sha256 {}",
                built.manifest_digest, built.layer_digest, built.wasm_sha256
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot write {out}: {e}");
            ExitCode::from(1)
        }
    }
}

fn validate_command(args: &[String]) -> ExitCode {
    let (filter, files) = match args {
        [flag, name, rest @ ..] if flag == "--filter" => (Some(name.as_str()), rest),
        rest => (None, rest),
    };
    if files.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let mut bad = 0;
    let mut checked = 0;
    for file in files {
        let found = match filter {
            Some(name) => std::fs::read_to_string(file)
                .map(|config| {
                    vec![validate::PluginConfig {
                        origin: file.clone(),
                        filter: name.to_string(),
                        config,
                        env: Vec::new(),
                        clusters: None,
                    }]
                })
                .map_err(|e| format!("cannot read: {e}")),
            None => validate::extract(Path::new(file)),
        };
        match found {
            Ok(list) => {
                if list.is_empty() {
                    println!("--       {file}: no Kavach plugin configuration");
                }
                for pc in list {
                    checked += 1;
                    match validate::check(&pc) {
                        Ok(()) => println!("ok       {}", pc.origin),
                        Err(line) => {
                            bad += 1;
                            println!("INVALID  {}\n         {line}", pc.origin);
                        }
                    }
                }
            }
            Err(e) => {
                bad += 1;
                println!("INVALID  {file}: {e}");
            }
        }
    }
    println!("{checked} configuration(s) checked, {bad} invalid");
    if bad > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn schema_text(name: &str) -> Option<String> {
    schema::of(name)
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .map(|s| s + "\n")
}

fn schema_command(args: &[String]) -> ExitCode {
    match args {
        [flag, dir] if flag == "--write" || flag == "--check" => {
            let mut stale = Vec::new();
            for name in schema::names() {
                let Some(text) = schema_text(name) else {
                    continue;
                };
                let path = Path::new(dir).join(format!("{name}.schema.json"));
                if flag == "--write" {
                    if let Err(e) =
                        std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, &text))
                    {
                        eprintln!("cannot write {}: {e}", path.display());
                        return ExitCode::from(1);
                    }
                    println!("wrote {}", path.display());
                } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                    stale.push(path.display().to_string());
                }
            }
            if stale.is_empty() {
                ExitCode::SUCCESS
            } else {
                println!(
                    "out of date (run: kavach schema --write {dir}): {}",
                    stale.join(", ")
                );
                ExitCode::from(1)
            }
        }
        [name] => match schema_text(name) {
            Some(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!(
                    "no schema named {name:?}; known: {}",
                    schema::names().join(", ")
                );
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
