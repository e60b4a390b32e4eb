-- Statements of trackctl/metrics.py (`trackctl metrics`).

-- name: poll_counts
-- tracking.poll_count counts every request (ok, failed or 429) made for a shipment and only grows,
-- so its sum per carrier is a true counter. Failures are not kept per request; the poll runs of
-- the last hour record them per carrier (counts.by_carrier: polled, failed with the 429s, and
-- rate_limited on its own since issue 15), which makes gauges.
SELECT c.name,
       coalesce((SELECT sum(t.poll_count) FROM sequencing.tracking t WHERE t.freightcarrier_id = c.id), 0)::bigint,
       coalesce(recent.polled, 0)::bigint, coalesce(recent.failed, 0)::bigint, coalesce(recent.rate_limited, 0)::bigint,
       coalesce(s.open_until > now(), false), coalesce(s.blocked_until > now(), false)
FROM sequencing.carrier c
LEFT JOIN sequencing.carrier_state s ON s.carrier_id = c.id
LEFT JOIN (
    SELECT b.key AS carrier, sum((b.value->>'polled')::bigint) AS polled, sum((b.value->>'failed')::bigint) AS failed,
           sum((b.value->>'rate_limited')::bigint) AS rate_limited
    FROM sequencing.run r CROSS JOIN LATERAL jsonb_each(r.counts->'by_carrier') b
    WHERE r.job = 'poll' AND r.started_at > now() - interval '1 hour' AND jsonb_typeof(r.counts->'by_carrier') = 'object'
    GROUP BY b.key
) recent ON recent.carrier = c.name
WHERE c.adapter IS NOT NULL
ORDER BY c.name;

-- name: delivery_counts
SELECT status, count(*) FROM sequencing.webhook_delivery GROUP BY status;
