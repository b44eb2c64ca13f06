//! The MCP gateway as a library: the policy hook runs before the breaker
//! and every `tools/call` (also refused ones) reaches the audit sink — the
//! two places the policy and audit stages plug in.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use harbormaster::mcp::{
    AuditSink, CallRecord, CallStatus, Caller, Front, McpError, McpGateway, Policy, Session,
};
use serde_json::json;

struct Recorder(Mutex<Vec<CallRecord>>);

impl AuditSink for Recorder {
    fn record(
        &self,
        record: CallRecord,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        self.0.lock().unwrap().push(record);
        Box::pin(async {})
    }
}

/// Kills one tool.
struct KillEcho;

impl Policy for KillEcho {
    fn admit(&self, _: &Caller, _: &str, tool: &str) -> Result<(), McpError> {
        if tool == "f__hang" {
            return Err(McpError::killed(tool));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_refusals_and_calls_all_reach_the_audit_sink() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[mcp]\n[mcp.servers.f]\ncommand = {}\n",
        support::mcp::fault_command()
    );
    let config = harbormaster::config::from_str(&text, &dir.path().join("h.toml")).unwrap();
    let hub = McpGateway::new(config.mcp.unwrap(), dir.path());
    let recorder = Arc::new(Recorder(Mutex::default()));
    hub.set_audit(recorder.clone());
    hub.set_policy(Arc::new(KillEcho));
    hub.start();
    hub.settled(Duration::from_secs(20)).await;

    let session: Arc<Session> = Session::new(Caller {
        client: "tester".into(),
        roles: vec![],
        front: Front::Stdio,
        session: "s1".into(),
    });
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let call = |id: u64, name: &str| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": {"message": "x"}}});
    let ok = hub.handle(&session, call(1, "f__echo"), &tx).await.unwrap();
    assert_eq!(ok["result"]["content"][0]["text"], "Echo: x");
    let killed = hub.handle(&session, call(2, "f__hang"), &tx).await.unwrap();
    assert_eq!(killed["error"]["code"], -32010);
    let unknown = hub
        .handle(&session, call(3, "f__missing"), &tx)
        .await
        .unwrap();
    assert_eq!(unknown["error"]["code"], -32602);
    let ping = hub
        .handle(
            &session,
            json!({"jsonrpc": "2.0", "id": 4, "method": "ping"}),
            &tx,
        )
        .await
        .unwrap();
    assert_eq!(ping["result"], json!({}));

    // A client's notifications/cancelled reaches the server; no answer is sent.
    hub.set_policy(Arc::new(harbormaster::mcp::AdmitAll));
    let hub2 = hub.clone();
    let session2 = session.clone();
    let tx2 = tx.clone();
    let pending =
        tokio::spawn(async move { hub2.handle(&session2, call(5, "f__hang"), &tx2).await });
    let check = json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "f__cancelled", "arguments": {}}});
    // The call is in flight upstream (sent to the server, its answer
    // pending) before the client cancels it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while hub.status()["servers"][0]["in_flight"] != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call never went in flight: {}",
            hub.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cancel =
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5}});
    assert!(hub.handle(&session, cancel, &tx).await.is_none());
    assert_eq!(
        pending.await.unwrap(),
        None,
        "a cancelled request gets no answer"
    );
    let mut seen: Vec<serde_json::Value> = Vec::new();
    for _ in 0..100 {
        let answer = hub.handle(&session, check.clone(), &tx).await.unwrap();
        seen =
            serde_json::from_str(answer["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.len(), 1, "the server got notifications/cancelled");

    // The cancelled call has its record too (written from its Drop).
    for _ in 0..100 {
        if recorder
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.tool == "f__hang" && r.status == CallStatus::Error)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let records = recorder.0.lock().unwrap().clone();
    let cancelled = records
        .iter()
        .find(|r| r.tool == "f__hang" && r.status == CallStatus::Error)
        .expect("a record of the cancelled call");
    assert_eq!(cancelled.error.as_deref(), Some("cancelled by the client"));
    let statuses: Vec<CallStatus> = records.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses[..3],
        [CallStatus::Ok, CallStatus::Killed, CallStatus::Error]
    );
    assert_eq!(records[0].server, "f");
    assert_eq!(records[0].tool, "f__echo");
    assert_eq!(records[0].client, "tester");
    assert_eq!(records[0].front, Front::Stdio);
    assert!(records[0].response_bytes > 0 && records[0].request_bytes > 0);
    assert!(records[1].error.as_deref().unwrap().contains("kill switch"));
    hub.stop_servers().await;
}
