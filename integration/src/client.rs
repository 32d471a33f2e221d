//! A raw HTTP/1.1 client: writes exactly the bytes a test asks for (duplicate headers, invalid
//! UTF-8, huge values), over plain TCP or mutual TLS, one request per connection; or many
//! requests, one after the other, over one kept-alive [`Connection`] (for tests that need volume);
//! or with a chunked body sent piece by piece ([`Request::start_chunked`]).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use crate::echo::Received;
use crate::pki::ClientIdentity;

#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    path: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).first().copied()
    }

    pub fn header_values(&self, name: &str) -> Vec<&str> {
        crate::echo::header_values(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The request as the echo upstream received it; None when the answer did not come from
    /// the upstream (a local reply of a filter, for example).
    pub fn echoed(&self) -> Option<Received> {
        self.header("x-served-by")?;
        serde_json::from_slice(&self.body).ok()
    }
}

impl Request {
    pub fn new(method: &str, path: impl AsRef<[u8]>) -> Self {
        Request {
            method: method.to_string(),
            path: path.as_ref().to_vec(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }

    pub fn get(path: impl AsRef<[u8]>) -> Self {
        Self::new("GET", path)
    }

    pub fn post(path: impl AsRef<[u8]>, body: impl AsRef<[u8]>) -> Self {
        let mut r = Self::new("POST", path);
        r.body = body.as_ref().to_vec();
        r
    }

    /// Adds a header (again, if it is already there).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    fn bytes(&self) -> Vec<u8> {
        self.bytes_with(true)
    }

    fn bytes_with(&self, close: bool) -> Vec<u8> {
        let mut out = self.head(false, close);
        out.extend_from_slice(&self.body);
        out
    }

    /// Request line and headers; with `chunked`, `transfer-encoding: chunked` instead of a
    /// content length; with `close`, `connection: close`.
    fn head(&self, chunked: bool, close: bool) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&self.path);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if !self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        {
            out.extend_from_slice(b"host: kavach.test\r\n");
        }
        for (n, v) in &self.headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        if chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        } else if !self.body.is_empty() || self.method == "POST" || self.method == "PUT" {
            out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Opens a plain TCP connection and sends the request head with a chunked body to follow:
    /// the caller sends the chunks (pausing between them as it likes) and then finishes.
    pub fn start_chunked(&self, addr: SocketAddr) -> io::Result<Streaming> {
        let mut stream = TcpStream::connect_timeout(&addr, self.timeout)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_nodelay(true)?;
        stream.write_all(&self.head(true, true))?;
        stream.flush()?;
        Ok(Streaming { stream })
    }

    /// Sends the body as these chunks with `pause` between them (long enough for the proxy to
    /// read each chunk on its own, so it sees them as separate body frames).
    pub fn send_chunked(
        &self,
        addr: SocketAddr,
        chunks: &[&[u8]],
        pause: Duration,
    ) -> io::Result<Response> {
        let mut s = self.start_chunked(addr)?;
        for (i, c) in chunks.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(pause);
            }
            s.chunk(c)?;
        }
        s.finish(&[])
    }

    /// Sends over plain TCP.
    pub fn send(&self, addr: SocketAddr) -> io::Result<Response> {
        let stream = TcpStream::connect_timeout(&addr, self.timeout)?;
        stream.set_read_timeout(Some(self.timeout))?;
        exchange(stream, &self.bytes())
    }

    /// Sends over TLS, presenting `identity`'s certificate when given.
    pub fn send_tls(
        &self,
        addr: SocketAddr,
        roots: &rustls::RootCertStore,
        identity: Option<&ClientIdentity>,
    ) -> io::Result<Response> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots.clone());
        let config = match identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain(), id.key())
                .map_err(io::Error::other)?,
            None => builder.with_no_client_auth(),
        };
        let name = ServerName::try_from("kavach.test").map_err(io::Error::other)?;
        let conn =
            rustls::ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
        let tcp = TcpStream::connect_timeout(&addr, self.timeout)?;
        tcp.set_read_timeout(Some(self.timeout))?;
        let tls = rustls::StreamOwned::new(conn, tcp);
        exchange(tls, &self.bytes())
    }
}

/// A request whose chunked body is being sent.
pub struct Streaming {
    stream: TcpStream,
}

impl Streaming {
    /// Sends one chunk (empty chunks are skipped: an empty chunk would end the body).
    pub fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.stream
            .write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
        self.stream.write_all(data)?;
        self.stream.write_all(b"\r\n")?;
        self.stream.flush()
    }

    /// Ends the body (with these trailers) and reads the response.
    pub fn finish(self, trailers: &[(&str, &str)]) -> io::Result<Response> {
        let mut end = b"0\r\n".to_vec();
        for (n, v) in trailers {
            end.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        end.extend_from_slice(b"\r\n");
        exchange(self.stream, &end)
    }
}

/// A kept-alive plain-TCP connection: requests go one after the other (no pipelining).
pub struct Connection {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Connection {
    pub fn open(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    /// Sends `request` without `connection: close` and reads its response.
    pub fn send(&mut self, request: &Request) -> io::Result<Response> {
        self.writer.write_all(&request.bytes_with(false))?;
        self.writer.flush()?;
        read_response(&mut self.reader)
    }
}

fn exchange<S: Read + Write>(mut stream: S, request: &[u8]) -> io::Result<Response> {
    stream.write_all(request)?;
    stream.flush()?;
    let mut reader = BufReader::new(stream);
    read_response(&mut reader)
}

fn read_response<R: BufRead>(reader: &mut R) -> io::Result<Response> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {line:?}"),
            )
        })?;
    let mut headers = Vec::new();
    loop {
        let mut h = Vec::new();
        reader.read_until(b'\n', &mut h)?;
        let h = String::from_utf8_lossy(&h).trim_end().to_string();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                // Trailers, then the empty line that ends the message (matters on a kept-alive
                // connection, where the next response follows).
                loop {
                    let mut t = String::new();
                    if reader.read_line(&mut t)? == 0 || t.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            chunk.truncate(n);
            body.extend_from_slice(&chunk);
        }
    } else if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = vec![0; len];
        reader.read_exact(&mut body)?;
    } else {
        // TLS peers may end without close_notify; whatever arrived is the body.
        let _ = reader.read_to_end(&mut body);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}
