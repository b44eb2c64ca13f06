//! The pure parts of the own HTTP/1 client: head encoding, response
//! framing and keep-alive as hyper's client decides them, chunked decoding
//! fed in every split.

use super::*;

fn head(raw: &str, is_head: bool) -> Result<Option<Parsed>, BoxError> {
    parse_head(&mut BytesMut::from(raw), is_head)
}

/// The final response of a complete head (all of `raw` taken).
fn response_of(raw: &str, is_head: bool) -> (Response<()>, Framing, bool) {
    let mut buf = BytesMut::from(raw);
    match parse_head(&mut buf, is_head) {
        Ok(Some(Parsed::Final(res, framing, keep_alive))) => {
            assert!(buf.is_empty(), "{buf:?} left of {raw:?}");
            (res, framing, keep_alive)
        }
        Ok(Some(Parsed::Informational)) => panic!("informational: {raw:?}"),
        Ok(None) => panic!("partial: {raw:?}"),
        Err(e) => panic!("error {e}: {raw:?}"),
    }
}

/// The framing and keep-alive of a complete final response head.
fn final_of(raw: &str, is_head: bool) -> (u16, Framing, bool) {
    let (res, framing, keep_alive) = response_of(raw, is_head);
    (res.status().as_u16(), framing, keep_alive)
}

#[test]
fn hop_by_hop_fields_are_left_out_and_the_rest_kept_in_order() {
    let raw = "HTTP/1.1 200 OK\r\nServer: x\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\nTrailer: a\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: close\r\nX-Secret: 1\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n";
    let (res, framing, keep_alive) = response_of(raw, false);
    let kept: Vec<String> = res
        .headers()
        .iter()
        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
        .collect();
    assert_eq!(kept, ["server: x", "set-cookie: a=1", "set-cookie: b=2"]);
    assert_eq!((framing, keep_alive), (Framing::Chunked, true));
    let plain = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n";
    let (res, framing, keep_alive) = response_of(plain, false);
    assert_eq!(res.headers().len(), 1);
    assert_eq!(res.headers()["content-length"], "2");
    assert_eq!((framing, keep_alive), (Framing::Length(2), false));
}

#[test]
fn encodes_the_head_in_origin_form_with_every_header() {
    let req = hyper::Request::builder()
        .method("DELETE")
        .uri("/a/b?c=d")
        .header("host", "client.test")
        .header("x-one", "1")
        .header("x-forwarded-proto", "gopher")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-forwarded-for", "10.0.0.2")
        .header("x-one", "2")
        .body(())
        .unwrap();
    let (parts, ()) = req.into_parts();
    let (host, client) = (
        HeaderValue::from_static("x.test"),
        HeaderValue::from_static("127.0.0.9"),
    );
    let forwarded = Forwarded {
        host: &host,
        client: &client,
        https: true,
    };
    let mut out = BytesMut::new();
    encode_head(&parts, &forwarded, &mut out);
    assert_eq!(
        String::from_utf8(out.to_vec()).unwrap(),
        "DELETE /a/b?c=d HTTP/1.1\r\nx-one: 1\r\nx-one: 2\r\n\
         x-forwarded-for: 10.0.0.1, 127.0.0.9\r\nx-forwarded-proto: https\r\n\
         x-forwarded-host: x.test\r\nhost: x.test\r\n\r\n"
    );
    // The same fields as hyper's client gets them through the map.
    let mut map = parts.headers.clone();
    forwarded.apply(&mut map);
    let mut fields: Vec<String> = map
        .iter()
        .map(|(n, v)| format!("{n}: {}\r\n", v.to_str().unwrap()))
        .collect();
    fields.sort();
    let text = String::from_utf8(out.to_vec()).unwrap();
    let mut lines: Vec<String> = text
        .split_inclusive("\r\n")
        .skip(1)
        .filter(|l| *l != "\r\n")
        .map(String::from)
        .collect();
    lines.sort();
    assert_eq!(lines, fields);
}

#[test]
fn framing_follows_rfc_9112_as_hyper_does() {
    let cl = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
    assert_eq!(final_of(cl, false), (200, Framing::Length(5), true));
    // HEAD, 204 and 304 have no body whatever the headers say.
    assert_eq!(final_of(cl, true).1, Framing::Length(0));
    let no_content = "HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n";
    assert_eq!(final_of(no_content, false).1, Framing::Length(0));
    let not_modified = "HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n";
    assert_eq!(final_of(not_modified, false).1, Framing::Length(0));
    // Transfer-Encoding before Content-Length; chunked only when last.
    let both = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: gzip, chunked\r\n\r\n";
    assert_eq!(final_of(both, false).1, Framing::Chunked);
    let gzip = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n";
    assert_eq!(final_of(gzip, false), (200, Framing::Close, false));
    // Neither: until the close, never reused.
    let neither = "HTTP/1.1 200 OK\r\n\r\n";
    assert_eq!(final_of(neither, false), (200, Framing::Close, false));
    // Repeated equal lengths are one length.
    let same = "HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\ncontent-length: 3\r\n\r\n";
    assert_eq!(final_of(same, false).1, Framing::Length(3));
}

#[test]
fn bad_lengths_and_heads_are_errors() {
    for raw in [
        "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n",
        "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        "HTTP/1.1 200 OK\r\nx: folded\r\n  line\r\n\r\n",
        "SSH-2.0-OpenSSH\r\n\r\n",
    ] {
        assert!(head(raw, false).is_err(), "accepted {raw:?}");
    }
}

#[test]
fn informational_responses_are_skipped_and_partial_heads_wait() {
    let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n";
    let mut buf = BytesMut::from(raw);
    match parse_head(&mut buf, false) {
        Ok(Some(Parsed::Informational)) => assert_eq!(buf, "HTTP/1.1 200 OK\r\n"),
        _ => panic!("100 not skipped"),
    }
    assert!(matches!(
        head("HTTP/1.1 200 OK\r\nx: y\r\n", false),
        Ok(None)
    ));
    assert!(matches!(head("", false), Ok(None)));
}

#[test]
fn keep_alive_as_the_versions_default_it() {
    let close = "HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n";
    assert!(!final_of(close, false).2);
    let old = "HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n";
    assert!(!final_of(old, false).2);
    let old_kept = "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n";
    assert!(final_of(old_kept, false).2);
}

/// Feeds `wire` to the chunked decoder `step` bytes at a time; returns the
/// data, the trailers and whether the end was reached.
fn dechunk(wire: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>, bool), BoxError> {
    let mut state = Chunk::Size;
    let mut buf = BytesMut::new();
    let (mut data, mut trailers) = (Vec::new(), None);
    for piece in wire.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match decode_chunked(&mut state, &mut buf)? {
                Decoded::Data(d) => data.extend_from_slice(&d),
                Decoded::Trailers(t) => {
                    trailers = Some(t);
                    return Ok((data, trailers, true));
                }
                Decoded::End => return Ok((data, trailers, true)),
                Decoded::More => break,
            }
        }
    }
    Ok((data, trailers, false))
}

#[test]
fn chunked_bodies_decode_in_any_split() {
    let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\nA \r\n0123456789\r\n0\r\n\r\n";
    for step in 1..=wire.len() {
        let (data, trailers, ended) = dechunk(wire, step).unwrap();
        assert_eq!(data, b"hello, world0123456789", "step {step}");
        assert!(ended && trailers.is_none(), "step {step}");
    }
    let with_trailers = b"3\r\nabc\r\n0\r\nx-sum: 6\r\nx-n: 1\r\n\r\n";
    for step in 1..=with_trailers.len() {
        let (data, trailers, ended) = dechunk(with_trailers, step).unwrap();
        assert_eq!(data, b"abc");
        assert!(ended);
        let t = trailers.expect("trailers");
        assert_eq!(t["x-sum"], "6");
        assert_eq!(t["x-n"], "1");
    }
    // Not ended until the last chunk and its empty line.
    assert!(!dechunk(b"3\r\nabc\r\n0\r\n", 4).unwrap().2);
}

#[test]
fn bad_chunks_are_errors() {
    for wire in [
        &b"g\r\nhello\r\n"[..],
        b"\r\nhello\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b"11111111111111111\r\n",
        b"-1\r\n",
    ] {
        assert!(dechunk(wire, wire.len()).is_err(), "accepted {wire:?}");
    }
}
