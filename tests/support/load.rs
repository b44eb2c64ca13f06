//! Steady client traffic for tests that change things under load: clients
//! loop their request until stopped and report every failure.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<(u32, Vec<String>)>>,
}

impl Load {
    /// One client per `(method, url)`, each looping until [`Load::finish`].
    pub fn start(requests: Vec<(reqwest::Method, String)>) -> Self {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let clients = requests
            .into_iter()
            .map(|(method, url)| {
                let (c, stop) = (client.clone(), stop.clone());
                tokio::spawn(async move {
                    let (mut ok, mut bad) = (0, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        match c.request(method.clone(), &url).body("payload").send().await {
                            Ok(res) if res.status().is_success() => match res.bytes().await {
                                Ok(_) => ok += 1,
                                Err(e) => bad.push(format!("body: {e}")),
                            },
                            Ok(res) => bad.push(res.status().to_string()),
                            Err(e) => bad.push(e.to_string()),
                        }
                    }
                    (ok, bad)
                })
            })
            .collect();
        Self { stop, clients }
    }

    /// Stops the clients: (successful requests, every failure).
    pub async fn finish(self) -> (u32, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut ok, mut bad) = (0, Vec::new());
        for c in self.clients {
            let (o, b) = c.await.unwrap();
            ok += o;
            bad.extend(b);
        }
        (ok, bad)
    }
}

/// Asserts that `n` requests to `http://gw/` are all answered by instances
/// whose names start with one of `names` (testapp's "hello from NAME").
pub async fn only_from(
    client: &reqwest::Client,
    gw: impl std::fmt::Display,
    names: &[&str],
    n: usize,
) {
    for _ in 0..n {
        let body = client
            .get(format!("http://{gw}/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            names
                .iter()
                .any(|name| body.starts_with(&format!("hello from {name}"))),
            "{body}"
        );
    }
}
