//! The domain's metric names: transitions, grace lateness, active overrides, stranded grace.

/// Transition requests by kind and outcome (accepted, replayed, refused, failed).
pub const TRANSITIONS: &str = "tierflow_transitions_total";
/// `apply_downgrade` start minus grace end: the SLO WI-010 asks to alert on.
pub const GRACE_LATENESS: &str = "tierflow_grace_lateness_seconds";
/// Active overrides, sampled by the maintenance leader.
pub const ACTIVE_OVERRIDES: &str = "tierflow_active_overrides";
/// The active-override count, from the partial index on active overrides.
pub const ACTIVE_OVERRIDES_SQL: &str =
    "SELECT count(*)::float8 FROM entitlement_overrides WHERE status = 'active'";

/// Pending downgrades more than a minute past their grace end, sampled by the maintenance leader.
pub const PENDING_PAST_GRACE: &str = "tierflow_transitions_pending_past_grace";
/// Of those, the ones whose apply_downgrade job is not live (dead, cancelled, gone).
pub const STRANDED: &str = "tierflow_transitions_stranded";
/// Jobs the reconciler put back on the queue for stranded transitions.
pub const RECONCILED: &str = "tierflow_reconciler_requeued_total";

/// Registers descriptions.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(TRANSITIONS, "Transition requests, by kind and outcome.");
    describe_histogram!(
        GRACE_LATENESS,
        Unit::Seconds,
        "apply_downgrade start minus grace end."
    );
    describe_gauge!(ACTIVE_OVERRIDES, "Active limit overrides.");
    describe_gauge!(
        PENDING_PAST_GRACE,
        "Pending downgrades more than a minute past their grace end."
    );
    describe_gauge!(
        STRANDED,
        "Pending downgrades past their grace end whose apply_downgrade job is not live."
    );
    describe_counter!(
        RECONCILED,
        "apply_downgrade jobs re-driven or re-enqueued by the reconciler."
    );
}
