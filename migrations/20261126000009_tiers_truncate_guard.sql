-- Completes 0008. A row trigger does not fire on TRUNCATE, which the dropped foreign keys used to
-- refuse; this statement trigger refuses it too. And `tenant_entitlements_tier_idx` served only
-- those foreign keys (finding the tenants of a deleted tier); nothing reads tenants by tier, and
-- every tier change paid an index entry for it (re-create it with a query that needs it).
-- A correction to 0008's comment: a stored tier id is one read from `tiers` by the request that
-- stored it (a transition's target), or, for `apply_downgrade`, that transition's own `to_tier_id`.
CREATE FUNCTION tiers_are_never_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tiers cannot be truncated: tenants and their history refer to them; set active = false to retire a tier'
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER tiers_are_never_truncated BEFORE TRUNCATE ON tiers
    FOR EACH STATEMENT EXECUTE FUNCTION tiers_are_never_truncated();

DROP INDEX IF EXISTS tenant_entitlements_tier_idx;
