-- Every transition job updates its action row once (`scheduled` → `done` or `moot`, with
-- `executed_at`). transition_actions_applied_idx (0016) named both columns — `executed_at` as its
-- key, `status` in its predicate — so none of those updates could be HOT: each wrote a new
-- primary-key entry too, about 100 bytes of WAL per transition job (docs/performance.md, "Real
-- jobs: the rest of the WAL").
--
-- The console's grace lateness over the last hour (apply_downgrade's run − grace end) reads the
-- transition instead: applying a downgrade sets its `status` to 'effective' and `effective_at` to
-- the time it ran, and only a downgrade has a grace end. That row's update was never HOT (its
-- status is in two partial indexes), so the entry moves there at no extra cost.
CREATE INDEX tier_transitions_grace_applied_idx ON tier_transitions (effective_at)
    WHERE status = 'effective' AND grace_ends_at IS NOT NULL;
DROP INDEX transition_actions_applied_idx;
-- Room on each page for the one update every row gets, so it stays on its page (a HOT update
-- needs free space where the old version is). Applies to pages written from now on.
ALTER TABLE transition_actions SET (fillfactor = 70);
