//! A small raw Streamable HTTP MCP client (2025-11-25 era, keep-alive, one
//! request at a time) for loads the Python SDK is too slow to drive, and a
//! JSON POST for the admin API.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};

/// One HTTP/1.1 exchange on `s`: (status, lowercased head, body).
fn exchange(
    s: &mut BufReader<TcpStream>,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String, String)> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.get_mut().write_all(req.as_bytes())?;
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if s.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut out = Vec::new();
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        out.resize(len.trim().parse().unwrap(), 0);
        s.read_exact(&mut out)?;
    } else if head.contains("transfer-encoding: chunked") {
        loop {
            let mut size = String::new();
            s.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            s.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
    }
    Ok((status, head, String::from_utf8_lossy(&out).into_owned()))
}

/// A JSON-RPC answer from a JSON or SSE body.
fn answer(body: &str) -> Value {
    let json = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .next_back()
        .unwrap_or(body);
    serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON-RPC ({e}): {body}"))
}

/// One MCP session over one keep-alive connection.
pub struct McpHttp {
    s: BufReader<TcpStream>,
    session: String,
    token: Option<String>,
    next: u64,
}

impl McpHttp {
    /// `initialize` + `notifications/initialized`; `Err(status)` when the
    /// front refuses (401 for a missing or unknown token).
    pub fn connect(addr: SocketAddr, token: Option<&str>) -> Result<Self, u16> {
        let s = TcpStream::connect(addr).expect("connect to the MCP front");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.set_nodelay(true).unwrap();
        let mut s = BufReader::new(s);
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
        let (code, head, _) = exchange(&mut s, "/mcp", &headers, &init.to_string()).unwrap();
        if code != 200 {
            return Err(code);
        }
        let session = head
            .lines()
            .find_map(|l| l.strip_prefix("mcp-session-id: "))
            .expect("initialize opens a session")
            .trim()
            .to_string();
        let mut me = Self {
            s,
            session,
            token: token.map(String::from),
            next: 1,
        };
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let (code, _, _) = me.post(&note.to_string()).unwrap();
        assert_eq!(code, 202);
        Ok(me)
    }

    fn post(&mut self, body: &str) -> std::io::Result<(u16, String, String)> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![
            ("Mcp-Session-Id", self.session.as_str()),
            ("MCP-Protocol-Version", "2025-11-25"),
        ];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        exchange(&mut self.s, "/mcp", &headers, body)
    }

    /// A request; the whole JSON-RPC answer (`result` or `error`).
    pub fn request(&mut self, method: &str, params: Value) -> std::io::Result<Value> {
        self.next += 1;
        let req = json!({"jsonrpc": "2.0", "id": self.next, "method": method, "params": params});
        let (code, _, body) = self.post(&req.to_string())?;
        assert_eq!(code, 200, "{method}: HTTP {code}: {body}");
        Ok(answer(&body))
    }

    /// `tools/call`.
    pub fn call(&mut self, tool: &str, args: Value) -> std::io::Result<Value> {
        self.request("tools/call", json!({"name": tool, "arguments": args}))
    }

    /// The names `tools/list` shows this caller, sorted.
    pub fn tools(&mut self) -> Vec<String> {
        let list = self.request("tools/list", json!({})).unwrap();
        let mut names: Vec<String> = list["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{list}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }
}

/// `POST path` with a JSON body to the admin listener: (status, JSON body).
pub fn post_json(addr: SocketAddr, path: &str, token: &str, body: Value) -> (u16, Value) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut s = BufReader::new(s);
    let auth = format!("Bearer {token}");
    let (code, _, body) =
        exchange(&mut s, path, &[("Authorization", &auth)], &body.to_string()).unwrap();
    (
        code,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}
