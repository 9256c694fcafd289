-- Tiers are never deleted and never renamed: a tier leaves the catalogue by `active = false`.
-- That rule, enforced here, is what keeps every stored tier id valid, so the foreign keys from the
-- hot rows to `tiers` can go. They cost more than a check: each one took FOR KEY SHARE on the
-- referenced tier row, and with every concurrent transition referencing the same handful of tier
-- rows, those shared locks turned into MultiXacts on every request (measured with
-- `tierflow bench --only enqueue`: HTTP transitions ~10 % faster without them). Writers still only
-- ever store a tier id they read from `tiers` in the same transaction.
ALTER TABLE tenant_entitlements DROP CONSTRAINT tenant_entitlements_tier_id_fkey;
ALTER TABLE tier_transitions DROP CONSTRAINT tier_transitions_from_tier_id_fkey;
ALTER TABLE tier_transitions DROP CONSTRAINT tier_transitions_to_tier_id_fkey;

CREATE FUNCTION tiers_are_never_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tier % cannot be deleted or renamed: tenants and their history refer to it; set active = false to retire it', OLD.tier_id
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER tiers_are_never_deleted BEFORE DELETE ON tiers
    FOR EACH ROW EXECUTE FUNCTION tiers_are_never_deleted();
CREATE TRIGGER tiers_are_never_renamed BEFORE UPDATE OF tier_id ON tiers
    FOR EACH ROW WHEN (OLD.tier_id IS DISTINCT FROM NEW.tier_id)
    EXECUTE FUNCTION tiers_are_never_deleted();
