use super::*;
use hyper::Response;

fn parse(text: &str) -> (Head, BytesMut) {
    let mut buf = BytesMut::from(text);
    let head = parse_request(&mut buf, HeaderMap::new(), 8192);
    (head, buf)
}

fn plain(text: &str) -> (Request<()>, bool, BytesMut) {
    match parse(text) {
        (
            Head::Plain {
                req, keep_alive, ..
            },
            rest,
        ) => (req, keep_alive, rest),
        (other, _) => panic!("{text:?}: {other:?}"),
    }
}

fn handed_over(text: &str) {
    let (head, rest) = parse(text);
    assert!(matches!(head, Head::HandOver), "{text:?}: {head:?}");
    assert_eq!(rest, text.as_bytes(), "hyper gets every byte back");
}

#[test]
fn a_plain_get_is_parsed_and_what_follows_stays_buffered() {
    let (req, keep_alive, rest) =
        plain("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nAccept: a\r\n\r\nGET /next");
    assert_eq!(req.method(), Method::GET);
    assert_eq!(req.uri(), "/a?b=1");
    assert_eq!(req.version(), Version::HTTP_11);
    assert_eq!(req.headers()["host"], "x");
    let accepts: Vec<_> = req.headers().get_all("accept").iter().collect();
    assert_eq!(accepts, ["*/*", "a"]);
    assert!(keep_alive);
    assert_eq!(rest, "GET /next");
}

#[test]
fn keep_alive_follows_the_version_and_connection_as_hyper_decides() {
    assert!(!plain("GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n").1);
    assert!(!plain("GET / HTTP/1.0\r\n\r\n").1);
    assert!(plain("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").1);
    assert!(!plain("GET / HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n").1);
    // A value that is not visible ASCII lists nothing (as in hyper).
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nConnection: close, \x80\r\n\r\n"[..]);
    match parse_request(&mut buf, HeaderMap::new(), 8192) {
        Head::Plain { keep_alive, .. } => assert!(keep_alive),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_partial_head_waits_for_more_unless_it_is_already_too_long() {
    assert!(matches!(
        parse("GET / HTTP/1.1\r\nHost: x\r\n").0,
        Head::Partial
    ));
    let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
    handed_over(&long);
    let complete_but_long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    handed_over(&complete_but_long);
}

#[test]
fn what_this_server_does_not_serve_goes_to_hyper_untouched() {
    for text in [
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        "PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        "CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        "G\0T / HTTP/1.1\r\n\r\n",
        "GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        handed_over(text);
    }
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    handed_over(&format!("GET / HTTP/1.1\r\n{many}\r\n"));
}

fn encode(res: Response<()>, req: Answering, body: Option<BodyLength>) -> (String, Encoder, bool) {
    let (mut parts, ()) = res.into_parts();
    let mut out = BytesMut::new();
    let (encoder, last) = encode_response(&mut parts, req, body, &mut out);
    let text = String::from_utf8(out.to_vec()).unwrap();
    // The date changes; its place and form do not.
    let at = text.find("date: ").expect("a date");
    let date = &text[at + 6..at + 35];
    assert!(date.ends_with(" GMT"), "{date}");
    let text = text.replace(date, "DATE");
    (text, encoder, last)
}

const GET11: Answering = Answering {
    head: false,
    version: Version::HTTP_11,
    keep_alive: true,
};

fn response(status: u16, headers: &[(&str, &str)]) -> Response<()> {
    let mut res = Response::new(());
    *res.status_mut() = StatusCode::from_u16(status).unwrap();
    for (n, v) in headers {
        res.headers_mut().append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    res
}

#[test]
fn a_known_length_is_sent_as_content_length() {
    let res = response(
        200,
        &[("content-type", "text/plain"), ("content-length", "5")],
    );
    let (text, encoder, last) = encode(res, GET11, Some(BodyLength::Known(5)));
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\ndate: DATE\r\n\r\n"
    );
    assert_eq!((encoder, last), (Encoder::Length(5), false));
    let (text, encoder, _) = encode(response(404, &[]), GET11, Some(BodyLength::Known(3)));
    assert_eq!(
        text,
        "HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\ndate: DATE\r\n\r\n"
    );
    assert_eq!(encoder, Encoder::Length(3));
}

#[test]
fn an_unknown_length_is_chunked_for_http11_and_close_delimited_for_http10() {
    let (text, encoder, last) = encode(response(200, &[]), GET11, Some(BodyLength::Unknown));
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ndate: DATE\r\n\r\n"
    );
    assert_eq!((encoder, last), (Encoder::Chunked, false));
    let req = Answering {
        version: Version::HTTP_10,
        keep_alive: false,
        ..GET11
    };
    let (text, encoder, last) = encode(response(200, &[]), req, Some(BodyLength::Unknown));
    assert_eq!(text, "HTTP/1.0 200 OK\r\ndate: DATE\r\n\r\n");
    assert_eq!((encoder, last), (Encoder::Close, true));
}

#[test]
fn an_http10_keep_alive_client_is_told_keep_alive() {
    let req = Answering {
        version: Version::HTTP_10,
        keep_alive: true,
        ..GET11
    };
    let (text, encoder, last) = encode(response(200, &[]), req, Some(BodyLength::Known(2)));
    assert_eq!(
        text,
        "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\ndate: DATE\r\n\r\n"
    );
    assert_eq!((encoder, last), (Encoder::Length(2), false));
}

#[test]
fn a_closing_request_or_response_closes_the_connection() {
    let req = Answering {
        keep_alive: false,
        ..GET11
    };
    let (text, _, last) = encode(response(200, &[]), req, None);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\ndate: DATE\r\n\r\n"
    );
    assert!(last);
    let (_, _, last) = encode(
        response(503, &[("connection", "close")]),
        GET11,
        Some(BodyLength::Known(2)),
    );
    assert!(last);
}

#[test]
fn head_204_and_304_have_no_body() {
    let head = Answering {
        head: true,
        ..GET11
    };
    let res = response(200, &[("content-length", "10")]);
    let (text, encoder, _) = encode(res, head, None);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\ncontent-length: 10\r\ndate: DATE\r\n\r\n"
    );
    assert_eq!(encoder, Encoder::Length(0));
    let (text, encoder, _) = encode(response(200, &[]), head, Some(BodyLength::Known(7)));
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ndate: DATE\r\n\r\n"
    );
    assert_eq!(encoder, Encoder::Length(0));
    for status in [204, 304] {
        let (text, encoder, _) = encode(response(status, &[]), GET11, Some(BodyLength::Unknown));
        assert!(!text.contains("transfer-encoding"), "{text}");
        assert!(!text.contains("content-length"), "{text}");
        assert_eq!(encoder, Encoder::Length(0));
    }
}

#[test]
fn a_date_from_the_response_is_kept() {
    let res = response(200, &[("date", "Tue, 01 Jan 2030 00:00:00 GMT")]);
    let (mut parts, ()) = res.into_parts();
    let mut out = BytesMut::new();
    encode_response(&mut parts, GET11, None, &mut out);
    assert_eq!(
        &out[..],
        b"HTTP/1.1 200 OK\r\ndate: Tue, 01 Jan 2030 00:00:00 GMT\r\ncontent-length: 0\r\n\r\n"
    );
}

#[test]
fn an_unknown_status_has_a_placeholder_reason() {
    let (text, _, _) = encode(response(599, &[]), GET11, None);
    assert!(text.starts_with("HTTP/1.1 599 <none>\r\n"), "{text}");
}

#[test]
fn chunk_sizes_are_hex() {
    let mut out = BytesMut::new();
    chunk_size(&mut out, 0x1a2b);
    chunk_size(&mut out, 0);
    assert_eq!(&out[..], b"1A2B\r\n0\r\n");
}
