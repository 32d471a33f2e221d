//! A real HTTP/1.1 upstream that echoes the request it received as JSON.
//!
//! Response body: `{"server": <name>, "method", "path", "headers": [[name, value], ...],
//! "body_len": n}` with every header pair in order (duplicates included; values decoded lossily).
//! Every request is also kept in [`EchoServer::received`], so a test can assert that the upstream
//! saw nothing at all.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One request as the upstream saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Received {
    pub server: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    #[serde(skip)]
    pub body: Vec<u8>,
}

/// Every value of `name` (case-insensitive) in a header list, in order.
pub fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

impl Received {
    /// Every value of `name` (case-insensitive).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).first().copied()
    }
}

/// How the upstream answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with the JSON echo.
    Echo,
    /// Reads the request and never answers (a hung collector).
    Hang,
    /// Answers every request with this status and an empty body.
    Status(u16),
}

pub struct EchoServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl EchoServer {
    /// Starts a server on 127.0.0.1 with a free port.
    pub fn start(name: &str) -> io::Result<Self> {
        Self::start_on("127.0.0.1:0", name, Behaviour::Echo)
    }

    pub fn start_with(name: &str, behaviour: Behaviour) -> io::Result<Self> {
        Self::start_on("127.0.0.1:0", name, behaviour)
    }

    pub fn start_on(addr: &str, name: &str, behaviour: Behaviour) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, n) = (Arc::clone(&received), Arc::clone(&stop), name.to_string());
        let c = Arc::clone(&connections);
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                c.fetch_add(1, Ordering::SeqCst);
                let Ok(conn) = conn else { continue };
                let (r, n, s) = (Arc::clone(&r), n.clone(), Arc::clone(&s));
                thread::spawn(move || {
                    let _ = serve(conn, &n, &r, behaviour, &s);
                });
            }
        });
        Ok(EchoServer {
            addr,
            received,
            connections,
            stop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Connections accepted so far, complete request or not: zero means not a byte of any
    /// request (not even its headers) reached this upstream.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Runs forever (for the demo binary).
    pub fn wait(&self) {
        loop {
            thread::sleep(Duration::from_secs(3600));
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve(
    conn: TcpStream,
    name: &str,
    log: &Mutex<Vec<Received>>,
    behaviour: Behaviour,
    stop: &AtomicBool,
) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    conn.set_nodelay(true)?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    loop {
        let Some(req) = read_request(&mut reader, name)? else {
            return Ok(());
        };
        let close = req
            .header_values("connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("close"));
        if let Ok(mut l) = log.lock() {
            l.push(req.clone());
        }
        match behaviour {
            Behaviour::Hang => {
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(50));
                }
                return Ok(());
            }
            // One write per response: several small writes on a keep-alive connection meet
            // Nagle's algorithm and the peer's delayed ACK (tens of ms per response).
            Behaviour::Status(code) => {
                writer.write_all(
                    format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n").as_bytes(),
                )?;
            }
            Behaviour::Echo => {
                let body = serde_json::to_vec(&req).unwrap_or_default();
                let mut out = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-served-by: {name}\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                out.extend_from_slice(&body);
                writer.write_all(&out)?;
            }
        }
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}

fn read_line(reader: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// Reads one request; None at a clean end of the connection.
fn read_request(reader: &mut impl BufRead, name: &str) -> io::Result<Option<Received>> {
    let Some(start) = read_line(reader)? else {
        return Ok(None);
    };
    let start = String::from_utf8_lossy(&start).into_owned();
    let mut parts = start.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let Some(line) = read_line(reader)? else {
            return Ok(None);
        };
        if line.is_empty() {
            break;
        }
        if let Some(colon) = line.iter().position(|b| *b == b':') {
            let n = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
            let v = String::from_utf8_lossy(&line[colon + 1..])
                .trim()
                .to_string();
            headers.push((n, v));
        }
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v): &(String, String)| v.clone())
    };
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let Some(size_line) = read_line(reader)? else {
                return Ok(None);
            };
            let size_text = String::from_utf8_lossy(&size_line);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Trailers until the empty line.
                while let Some(l) = read_line(reader)? {
                    if l.is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; size];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            read_line(reader)?;
        }
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = vec![0; len];
        reader.read_exact(&mut body)?;
    }
    Ok(Some(Received {
        server: name.to_string(),
        method,
        path,
        headers,
        body_len: body.len(),
        body,
    }))
}
