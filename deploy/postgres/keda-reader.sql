-- Grants of tierflow_keda, the role KEDA's postgresql trigger connects as to read the due-queue
-- depth (deploy/k8s/components/keda/scaledobject.yaml). It may read apalis.jobs and nothing
-- else: no tenant, entitlement or audit row.
--
-- The role itself (login, password from the tierflow-keda-db Secret, connection limit) is
-- declared in the CloudNativePG Cluster (managed.roles). These grants name tables that only
-- exist once `tierflow migrate` has run, so they are applied afterwards, once, by the owner
-- of the schema (the tierflow application role) — docs/operations.md, "First install".
-- Idempotent: re-running it changes nothing. tests/e2e/deploy.rs runs the ScaledObject's query
-- as a role holding exactly these grants against a migrated database.
GRANT USAGE ON SCHEMA apalis TO tierflow_keda;
GRANT SELECT ON apalis.jobs TO tierflow_keda;
