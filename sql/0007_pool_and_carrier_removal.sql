-- 0007: an S10 pool's target fits its serial range; carriers can be removed.

-- A target above the size of an S10 range can never be reached: every refill would report the
-- range used up. Existing pools are capped to their range (refill could never fill more anyway).
UPDATE sequencing.pool SET target = s10_last - s10_first + 1
WHERE kind = 's10' AND target > s10_last - s10_first + 1;

ALTER TABLE sequencing.pool
    ADD CONSTRAINT pool_s10_target_fits CHECK (kind <> 's10' OR target <= s10_last - s10_first + 1);

-- A removed carrier keeps its row (its shipments' codes are never deleted and name it), but it is
-- no longer listed, assigned, polled or changed: `trackctl carrier remove NAME --force`.
ALTER TABLE sequencing.carrier ADD COLUMN removed_at timestamptz;
