-- Polling (trackctl/poll.py). The older statements of poll.py are still Python constants there.

-- name: release_abandoned
-- A run stopped by SIGINT/SIGTERM gives back what its abandoned requests held: its concurrency
-- slots, the half-open probes it was making, and its claims, which are due again at once (the
-- claim had moved next_poll_at past its lease) so the next run takes them.
WITH slots AS (
    UPDATE sequencing.carrier_slot SET leased_until = '-infinity', holder = NULL
    WHERE holder = %(holder)s
), probes AS (
    UPDATE sequencing.carrier_state SET probe_until = NULL
    WHERE carrier_id = ANY (%(probing)s::integer[]) AND probe_until IS NOT NULL
)
UPDATE sequencing.tracking SET claimed_until = NULL, next_poll_at = now()
WHERE id = ANY (%(ids)s::bigint[]) AND claimed_until IS NOT NULL
