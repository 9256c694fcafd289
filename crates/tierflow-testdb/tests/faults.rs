//! Proves the fault helpers that fleet tests build on do what they claim: a crash and a restart
//! on the same port ([`PrivatePostgres::stop_immediate`], [`PrivatePostgres::start_again`]), a
//! frozen server ([`PrivatePostgres::freeze`]), a standby that replays and is promoted, and the
//! TCP proxy standing in for a Kubernetes Service ([`TcpProxy`]).

use std::net::SocketAddr;
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tierflow_testdb::private::PrivatePostgres;
use tierflow_testdb::proxy::TcpProxy;
use tierflow_testdb::wait_until;

/// How long a test waits for an answer that must not come: a frozen server or a paused proxy
/// never answers, so any bound proves it, however busy the machine; one second keeps tests quick.
const NO_ANSWER: Duration = Duration::from_secs(1);
/// Bound on an answer that must come (thawed server, resumed proxy): generous for a busy machine.
const ANSWER: Duration = Duration::from_secs(10);

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn via(proxy: &TcpProxy) -> String {
    format!("postgres://postgres@{}/postgres", proxy.addr())
}

/// The port of the server a session is on: tells which server a proxied connection reached.
async fn server_port(conn: &mut PgConnection) -> sqlx::Result<u16> {
    let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(conn)
        .await?;
    Ok(u16::try_from(port).unwrap_or_else(|_| panic!("port {port}")))
}

/// Waits until process `pid` has exited (a zombie counts: only its parent's wait is left).
async fn wait_exited(pid: u32) {
    wait_until(ANSWER, &format!("process {pid} to exit"), || async move {
        let exited = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            state.starts_with(['Z', 'X'])
        });
        exited.then_some(())
    })
    .await;
}

async fn ids(conn: &mut PgConnection) -> Vec<i32> {
    sqlx::query_scalar("SELECT id FROM t ORDER BY id")
        .fetch_all(conn)
        .await
        .unwrap_or_else(|e| panic!("read t: {e}"))
}

#[tokio::test]
async fn an_immediate_stop_keeps_committed_rows_and_the_server_starts_again_on_its_port() {
    let pg = PrivatePostgres::start();
    let url = pg.url("postgres");
    let mut conn = connect(&url).await;
    sqlx::raw_sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let (port, pid) = (pg.port(), pg.postmaster_pid());
    assert!(pid.is_some(), "a running server has a postmaster");

    pg.stop_immediate();
    assert_eq!(pg.postmaster_pid(), None, "the postmaster is gone");
    assert!(
        server_port(&mut conn).await.is_err(),
        "a session survived the crash"
    );
    assert!(
        PgConnection::connect(&url).await.is_err(),
        "nothing listens"
    );

    pg.start_again();
    assert_eq!(pg.port(), port, "same port after the crash");
    assert_ne!(pg.postmaster_pid(), pid, "a new postmaster");
    let mut conn = connect(&url).await;
    assert_eq!(ids(&mut conn).await, [1], "the committed row survived");
    sqlx::query("INSERT INTO t VALUES (2)")
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("write after recovery: {e}"));

    // The handle owns the server it started again: drop stops it.
    let pid = pg.postmaster_pid().unwrap_or_else(|| panic!("running"));
    drop(pg);
    wait_exited(pid).await;
}

#[tokio::test]
async fn a_frozen_server_answers_nothing_until_thawed() {
    let pg = PrivatePostgres::start();
    let url = pg.url("postgres");
    let mut conn = connect(&url).await;
    assert_eq!(server_port(&mut conn).await.ok(), Some(pg.port()));

    pg.freeze();
    // The query is kept (not cancelled) across the timeout, so the same one must complete once
    // the server is thawed.
    let query = server_port(&mut conn);
    tokio::pin!(query);
    let (running, new) = tokio::join!(
        tokio::time::timeout(NO_ANSWER, &mut query),
        tokio::time::timeout(NO_ANSWER, PgConnection::connect(&url)),
    );
    assert!(running.is_err(), "a frozen server answered a session");
    assert!(new.is_err(), "a frozen server took a new connection");

    pg.thaw();
    let answer = tokio::time::timeout(ANSWER, query)
        .await
        .unwrap_or_else(|_| panic!("no answer {ANSWER:?} after the thaw"));
    assert_eq!(answer.ok(), Some(pg.port()));
    let mut conn = connect(&url).await;
    assert_eq!(server_port(&mut conn).await.ok(), Some(pg.port()));

    // Dropped while frozen: thawed, then stopped.
    pg.freeze();
    let pid = pg.postmaster_pid().unwrap_or_else(|| panic!("running"));
    drop(pg);
    wait_exited(pid).await;
}

#[tokio::test]
async fn a_standby_replays_the_primary_and_is_writable_once_promoted() {
    let primary = PrivatePostgres::start_primary();
    let mut on_primary = connect(&primary.url("postgres")).await;
    sqlx::raw_sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .execute(&mut on_primary)
        .await
        .unwrap_or_else(|e| panic!("write on the primary: {e}"));

    let standby = PrivatePostgres::start_standby(&primary);
    assert_ne!(standby.port(), primary.port());
    // Written after the base backup: reaches the standby by streaming only.
    sqlx::query("INSERT INTO t VALUES (2)")
        .execute(&mut on_primary)
        .await
        .unwrap_or_else(|e| panic!("write on the primary: {e}"));
    standby.wait_for_replay(&primary).await;

    let mut on_standby = connect(&standby.url("postgres")).await;
    assert_eq!(ids(&mut on_standby).await, [1, 2]);
    let refused = sqlx::query("INSERT INTO t VALUES (3)")
        .execute(&mut on_standby)
        .await
        .expect_err("a standby took a write");
    let code = refused.as_database_error().and_then(|e| e.code());
    assert_eq!(code.as_deref(), Some("25006"), "read-only: {refused}");

    standby.promote();
    // The session opened during recovery carries on, now writable.
    sqlx::query("INSERT INTO t VALUES (3)")
        .execute(&mut on_standby)
        .await
        .unwrap_or_else(|e| panic!("write on the promoted standby: {e}"));
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut on_standby)
        .await
        .unwrap_or_else(|e| panic!("pg_is_in_recovery: {e}"));
    assert!(!in_recovery);
    assert_eq!(ids(&mut on_standby).await, [1, 2, 3]);
}

#[tokio::test]
async fn the_proxy_forwards_and_a_retarget_cuts_old_sessions_and_sends_new_ones_over() {
    let old = PrivatePostgres::start();
    let new = PrivatePostgres::start();
    let proxy = TcpProxy::start(local(old.port())).await;
    let mut conn = connect(&via(&proxy)).await;
    assert_eq!(server_port(&mut conn).await.ok(), Some(old.port()));

    proxy.retarget(local(new.port())).await;
    assert_eq!(proxy.target(), local(new.port()));
    assert!(
        server_port(&mut conn).await.is_err(),
        "a session survived the retarget"
    );
    let mut conn = connect(&via(&proxy)).await;
    assert_eq!(server_port(&mut conn).await.ok(), Some(new.port()));
}

#[tokio::test]
async fn the_proxy_cuts_all_sessions_and_pauses_like_a_partition() {
    let pg = PrivatePostgres::start();
    let proxy = TcpProxy::start(local(pg.port())).await;
    let mut conn = connect(&via(&proxy)).await;
    assert_eq!(server_port(&mut conn).await.ok(), Some(pg.port()));

    proxy.cut_all().await;
    assert!(
        server_port(&mut conn).await.is_err(),
        "a session survived the cut"
    );
    let mut conn = connect(&via(&proxy)).await;
    assert_eq!(server_port(&mut conn).await.ok(), Some(pg.port()));

    proxy.pause();
    let query = server_port(&mut conn);
    tokio::pin!(query);
    let url = via(&proxy);
    let (running, new) = tokio::join!(
        tokio::time::timeout(NO_ANSWER, &mut query),
        tokio::time::timeout(NO_ANSWER, PgConnection::connect(&url)),
    );
    assert!(running.is_err(), "a paused proxy forwarded a query");
    assert!(new.is_err(), "a paused proxy forwarded a new connection");

    proxy.resume();
    let answer = tokio::time::timeout(ANSWER, query)
        .await
        .unwrap_or_else(|_| panic!("no answer {ANSWER:?} after resuming"));
    assert_eq!(answer.ok(), Some(pg.port()));
}
