//! The PostgreSQL sink (`[audit] url`). One connection; a batch is one
//! transaction whose inserts are pipelined (sent together, not one round
//! trip each). When the server goes away the writer reconnects here.

use std::time::SystemTime;

use anyhow::Context;
use futures_util::future::try_join_all;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

use super::record::{Envelope, Record};
use super::schema;
use super::sink::Sink;

pub struct PostgresSink {
    url: String,
    conn: Option<Conn>,
}

struct Conn {
    client: Client,
    mcp: Statement,
    admin: Statement,
}

impl PostgresSink {
    pub fn new(url: String) -> Self {
        Self { url, conn: None }
    }
}

/// How long a connection attempt may take unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connects; the connection task ends with the client.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let mut config: tokio_postgres::Config = url.parse().context("invalid [audit] url")?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let (client, connection) = config
        .connect(NoTls)
        .await
        .context("cannot connect to the PostgreSQL audit database ([audit] url)")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "audit database connection ended");
        }
    });
    Ok(client)
}

async fn migrate(client: &mut Client) -> anyhow::Result<()> {
    let tx = client.transaction().await?;
    tx.batch_execute(schema::VERSION_TABLE).await?;
    // Two harbormasters starting at once migrate one after the other.
    tx.batch_execute("LOCK TABLE harbormaster_schema IN EXCLUSIVE MODE")
        .await?;
    let version: i32 = tx
        .query_opt("SELECT version FROM harbormaster_schema", &[])
        .await?
        .map_or(0, |r| r.get(0));
    let version = version as usize;
    for (i, sql) in schema::POSTGRES.iter().enumerate().skip(version) {
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("audit schema migration {} failed", i + 1))?;
    }
    if version < schema::POSTGRES.len() {
        tx.execute("DELETE FROM harbormaster_schema", &[]).await?;
        tx.execute(
            "INSERT INTO harbormaster_schema (version) VALUES ($1)",
            &[&(schema::POSTGRES.len() as i32)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

impl Sink for PostgresSink {
    async fn connect(&mut self) -> anyhow::Result<()> {
        self.conn = None;
        let mut client = connect(&self.url).await?;
        migrate(&mut client).await?;
        let mcp = client
            .prepare(
                "INSERT INTO mcp_calls (uid, ts, client, front, session, server, tool, status,
                 latency_ms, request_bytes, response_bytes, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (uid) DO NOTHING",
            )
            .await?;
        let admin = client
            .prepare(
                "INSERT INTO admin_actions (uid, ts, action, target, result, peer, via)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (uid) DO NOTHING",
            )
            .await?;
        self.conn = Some(Conn { client, mcp, admin });
        Ok(())
    }

    async fn write(&mut self, batch: &[Envelope]) -> anyhow::Result<()> {
        let conn = self.conn.as_mut().context("not connected")?;
        let (mcp, admin) = (conn.mcp.clone(), conn.admin.clone());
        let tx = conn.client.transaction().await?;
        let inserts = batch.iter().map(|e| {
            let tx = &tx;
            let (mcp, admin) = (&mcp, &admin);
            async move {
                match &e.record {
                    Record::Mcp(c) => {
                        let (req, resp) = (c.request_bytes as i64, c.response_bytes as i64);
                        let params: [&(dyn ToSql + Sync); 12] = [
                            &e.uid,
                            &c.ts,
                            &c.client,
                            &c.front.as_str(),
                            &c.session,
                            &c.server,
                            &c.tool,
                            &c.status.as_str(),
                            &c.latency_ms,
                            &req,
                            &resp,
                            &c.error,
                        ];
                        tx.execute(mcp, &params).await
                    }
                    Record::Admin(a) => {
                        let params: [&(dyn ToSql + Sync); 7] = [
                            &e.uid,
                            &a.ts,
                            &a.action,
                            &a.target,
                            &a.result,
                            &a.peer,
                            &a.via.as_str(),
                        ];
                        tx.execute(admin, &params).await
                    }
                }
            }
        });
        try_join_all(inserts).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn purge(&mut self, before: SystemTime) -> anyhow::Result<u64> {
        let conn = self.conn.as_mut().context("not connected")?;
        let tx = conn.client.transaction().await?;
        let mut n = tx
            .execute("DELETE FROM mcp_calls WHERE ts < $1", &[&before])
            .await?;
        n += tx
            .execute("DELETE FROM admin_actions WHERE ts < $1", &[&before])
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn close(&mut self) -> anyhow::Result<()> {
        self.conn = None;
        Ok(())
    }

    fn describe(&self) -> String {
        let db = self.url.rsplit('/').next().unwrap_or("");
        format!("postgres:{}", db.split('?').next().unwrap_or(db))
    }
}
