//! A real OCI registry on 127.0.0.1 (Debian's `docker-registry`, the CNCF distribution server),
//! and `skopeo` to push to and pull from it.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

fn require(tool: &str) -> io::Result<()> {
    match Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(_) => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("{tool} is not installed (apt-get install skopeo docker-registry; scripts/test.sh does it)"),
        )),
    }
}

impl Registry {
    pub fn start(dir: &Path) -> io::Result<Registry> {
        require("docker-registry")?;
        require("skopeo")?;
        fs::create_dir_all(dir.join("storage"))?;
        // Pick a free port, then hand it to the registry (it cannot report one it chose).
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let config = dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.join("storage").display()
            ),
        )?;
        let log = fs::File::create(dir.join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        let registry = Registry {
            child,
            addr,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "registry did not listen on {addr}: {}",
                    fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(registry)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `docker://<registry>/<repo>:<tag>`
    pub fn reference(&self, repo: &str, tag: &str) -> String {
        format!("docker://{}/{repo}:{tag}", self.addr)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs skopeo with TLS verification off (the test registry speaks plain HTTP on loopback).
pub fn skopeo(args: &[&str]) -> io::Result<String> {
    let out = Command::new("skopeo").args(args).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "skopeo {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
