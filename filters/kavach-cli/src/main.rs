//! `kavach`: native tools that go with the filters.
//!
//! ```text
//! kavach verify [FILE|-] [--key-env VAR]          check a stream of audit records
//! kavach oci WASM OUT_DIR NAME TAG                write an OCI image layout of a module
//! ```

mod oci;

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use kavach_core::audit::verify::verify;

const USAGE: &str = "usage:
  kavach verify [FILE|-] [--key-env VAR]
      Verifies a stream of Kavach audit records (one per line, chains interleaved).
      Reports the first edited, dropped, reordered or inserted record and exits 1.
      --key-env VAR  the chain key (for HMAC-sealed records) is in environment variable VAR.
  kavach oci WASM OUT_DIR NAME TAG
      Writes an OCI image layout (Istio/Envoy Gateway \"compat\" variant: one tar+gzip layer
      holding plugin.wasm) for the module WASM; prints the manifest digest. Deterministic.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("verify") => verify_command(&args[1..]),
        Some("oci") => oci_command(&args[1..]),
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
