-- An action whose transition became effective before it ran (apply_downgrade ran first, e.g. after
-- a restart across the grace end) has nothing left to do: it is `moot`, not `scheduled` forever.
ALTER TABLE transition_actions DROP CONSTRAINT transition_actions_status_known;
ALTER TABLE transition_actions ADD CONSTRAINT transition_actions_status_known
    CHECK (status IN ('scheduled', 'done', 'cancelled', 'moot'));
-- Rows such a run left behind before this migration.
UPDATE transition_actions a SET status = CASE t.status WHEN 'cancelled' THEN 'cancelled' ELSE 'moot' END
  FROM tier_transitions t
 WHERE t.id = a.transition_id AND a.status = 'scheduled' AND t.status <> 'pending';
