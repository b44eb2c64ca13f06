//! The Streamable HTTP front's protocol rules, byte for byte: Origin,
//! sessions, protocol version header, GET and DELETE, bearer tokens.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use support::harbor::Harbor;
use support::mcp;

/// One request: (status, head, body).
fn send(
    addr: SocketAddr,
    method: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!(
        "{method} /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head[9..12].parse().unwrap(),
        head.to_ascii_lowercase(),
        body.to_string(),
    )
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
const JSON: (&str, &str) = ("Content-Type", "application/json");
const ACCEPT: (&str, &str) = ("Accept", "application/json, text/event-stream");

fn config(extra: &str) -> String {
    format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n[mcp]\nallowed_origins = [\"https://app.example.com\"]\n{extra}\n[mcp.servers.f]\ncommand = {}\n",
        mcp::fault_command()
    )
}

#[test]
fn sessions_origins_and_versions_follow_the_streamable_http_rules() {
    let h = Harbor::start(&config(""));
    let addr = h.gateway(0);

    let (code, _, _) = send(
        addr,
        "POST",
        &[JSON, ACCEPT, ("Origin", "https://evil.example")],
        INIT,
    );
    assert_eq!(code, 403, "a foreign Origin is refused");
    let (code, head, body) = send(
        addr,
        "POST",
        &[JSON, ACCEPT, ("Origin", "https://app.example.com")],
        INIT,
    );
    assert_eq!(code, 200, "an allowed Origin passes: {body}");
    let session = head
        .lines()
        .find_map(|l| l.strip_prefix("mcp-session-id: "))
        .expect("initialize opens a session")
        .to_string();
    let (code, _, _) = send(
        addr,
        "POST",
        &[JSON, ACCEPT, ("Origin", "http://localhost:3000")],
        INIT,
    );
    assert_eq!(code, 200, "loopback origins always pass");

    let (code, _, _) = send(addr, "POST", &[JSON, ACCEPT], LIST);
    assert_eq!(code, 400, "no session id");
    let (code, _, _) = send(
        addr,
        "POST",
        &[JSON, ACCEPT, ("Mcp-Session-Id", "nope")],
        LIST,
    );
    assert_eq!(code, 404, "unknown session");
    let with = [
        JSON,
        ACCEPT,
        ("Mcp-Session-Id", session.as_str()),
        ("MCP-Protocol-Version", "2025-11-25"),
    ];
    let (code, _, body) = send(addr, "POST", &with, LIST);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"tools\""), "{body}");
    let (code, _, _) = send(
        addr,
        "POST",
        &[
            JSON,
            ACCEPT,
            ("Mcp-Session-Id", &session),
            ("MCP-Protocol-Version", "1999-01-01"),
        ],
        LIST,
    );
    assert_eq!(code, 400, "unknown protocol version");
    let (code, _, _) = send(
        addr,
        "POST",
        &[JSON, ACCEPT, ("Mcp-Session-Id", &session)],
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!(code, 202, "a notification is accepted");
    let (code, _, body) = send(
        addr,
        "POST",
        &[JSON, ACCEPT, ("Mcp-Session-Id", &session)],
        "{not json",
    );
    assert_eq!(code, 400);
    assert!(body.contains("-32700"), "{body}");

    // Stateless era: no session needed; GET and DELETE are 405.
    let modern = [JSON, ACCEPT, ("MCP-Protocol-Version", "2026-07-28")];
    let (code, _, body) = send(
        addr,
        "POST",
        &modern,
        r#"{"jsonrpc":"2.0","id":3,"method":"server/discover","params":{}}"#,
    );
    assert_eq!(code, 200);
    assert!(
        body.contains("supportedVersions") && body.contains("2026-07-28"),
        "{body}"
    );
    let (code, _, _) = send(addr, "GET", &modern, "");
    assert_eq!(code, 405);

    let (code, _, _) = send(addr, "DELETE", &[("Mcp-Session-Id", &session)], "");
    assert_eq!(code, 200, "DELETE ends the session");
    let (code, _, _) = send(
        addr,
        "POST",
        &[JSON, ACCEPT, ("Mcp-Session-Id", &session)],
        LIST,
    );
    assert_eq!(
        code, 404,
        "an ended session is gone: the client initializes again"
    );
}

#[test]
fn with_clients_configured_a_bearer_token_is_required() {
    let clients = "[mcp.clients.alice]\ntoken = \"alice-token-0123456789\"\n";
    let h =
        Harbor::start(&config("").replace("[mcp.servers.f]", &format!("{clients}[mcp.servers.f]")));
    let addr = h.gateway(0);
    let (code, head, _) = send(addr, "POST", &[JSON, ACCEPT], INIT);
    assert_eq!(code, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let (code, _, _) = send(
        addr,
        "POST",
        &[
            JSON,
            ACCEPT,
            ("Authorization", "Bearer wrong-token-0123456789"),
        ],
        INIT,
    );
    assert_eq!(code, 401);
    let (code, _, _) = send(
        addr,
        "POST",
        &[
            JSON,
            ACCEPT,
            ("Authorization", "Bearer alice-token-0123456789"),
        ],
        INIT,
    );
    assert_eq!(code, 200);
}
