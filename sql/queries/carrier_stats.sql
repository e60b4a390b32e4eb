-- Carrier request accounting (sequencing.carrier_call) and the shipment search (trackctl/carrier_stats.py).

-- name: stats
-- Per polled carrier over the window: requests made, failed, rate limited (429), numbers asked
-- about in tracking requests, latency percentiles, numbers registered (17TRACK quota).
SELECT c.name, c.adapter,
       count(k.id)::int,
       (count(k.id) FILTER (WHERE k.outcome = 'failed'))::int,
       (count(k.id) FILTER (WHERE k.outcome = 'rate_limited'))::int,
       coalesce(sum(k.numbers) FILTER (WHERE k.kind = 'track'), 0)::int,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY k.latency_ms),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY k.latency_ms),
       coalesce(sum(k.registered), 0)::int
FROM sequencing.carrier c
LEFT JOIN sequencing.carrier_call k ON k.carrier_id = c.id AND k.at >= now() - %(since)s
WHERE c.adapter IS NOT NULL
GROUP BY c.id, c.name, c.adapter
ORDER BY c.id

-- name: totals
-- Counters since the table began, for the metrics: per carrier and outcome.
SELECT c.name, k.outcome, count(*)::bigint, coalesce(sum(k.numbers) FILTER (WHERE k.kind = 'track'), 0)::bigint,
       coalesce(sum(k.registered), 0)::bigint
FROM sequencing.carrier_call k JOIN sequencing.carrier c ON c.id = k.carrier_id
GROUP BY c.name, k.outcome
ORDER BY c.name, k.outcome

-- name: failure_ratios
-- Carriers whose requests of the last %(window)s failed (or were rate limited) at least
-- %(ratio)s of the time, over at least %(minimum)s requests.
SELECT c.name, count(*)::int, (count(*) FILTER (WHERE k.outcome <> 'ok'))::int
FROM sequencing.carrier_call k JOIN sequencing.carrier c ON c.id = k.carrier_id
WHERE k.at >= now() - %(window)s
GROUP BY c.name
HAVING count(*) >= %(minimum)s AND count(*) FILTER (WHERE k.outcome <> 'ok') >= %(ratio)s * count(*)
ORDER BY c.name

-- name: prune
DELETE FROM sequencing.carrier_call WHERE at < now() - %(older_than)s

-- name: find_shipments
-- `trackctl shipments`: every filter is optional (NULL: not applied).
SELECT t.tracking_id, t.order_id, c.name, t.status, coalesce(t.last_event_at, t.assigned_at) AS updated_at,
       t.stale_at IS NOT NULL
FROM sequencing.tracking t JOIN sequencing.carrier c ON c.id = t.freightcarrier_id
WHERE t.freightcarrier_id IS NOT NULL
  AND (%(statuses)s::text[] IS NULL OR t.status = ANY(%(statuses)s::text[]))
  AND (%(carrier)s::int IS NULL OR t.freightcarrier_id = %(carrier)s::int)
  AND (NOT %(stale)s OR t.stale_at IS NOT NULL)
  AND (%(quiet)s::interval IS NULL OR coalesce(t.last_event_at, t.assigned_at) < now() - %(quiet)s::interval)
  AND (%(since)s::interval IS NULL OR coalesce(t.last_event_at, t.assigned_at) >= now() - %(since)s::interval)
  AND (%(order_id)s::text IS NULL OR t.order_id = %(order_id)s::text)
ORDER BY coalesce(t.last_event_at, t.assigned_at) DESC, t.id DESC
LIMIT %(limit)s
