//! Reading Server-Sent Events as they arrive: complete events are taken
//! off the front of a buffer, each as its joined `data:` lines.

/// Takes every complete event (ended by a blank line) off `buf`; returns
/// each one's data.
pub fn take_events(buf: &mut String) -> Vec<String> {
    let mut events = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let event: String = buf.drain(..end + 2).collect();
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim_start)
            .collect();
        if !data.is_empty() {
            events.push(data.join("\n"));
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_events_are_taken_and_the_rest_kept() {
        let mut buf =
            "event: message\ndata: {\"a\":1}\n\n: comment\n\ndata: x\ndata: y\n\ndata: par"
                .to_string();
        assert_eq!(
            take_events(&mut buf),
            vec!["{\"a\":1}".to_string(), "x\ny".to_string()]
        );
        assert_eq!(buf, "data: par");
    }
}
