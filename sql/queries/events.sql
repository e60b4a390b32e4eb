-- The events stream and consumer groups (trackctl/events.py).

-- name: horizon
-- The sequence's last value first, then (in the same statement, after it by data dependency) the
-- sessions holding a write lock on the outbox.
SELECT h.last, (
    SELECT array_agg(l.virtualtransaction) FROM pg_locks l
    WHERE h.last IS NOT NULL AND l.locktype = 'relation'
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.relation = 'sequencing.outbox'::regclass AND l.mode = 'RowExclusiveLock' AND l.granted
      AND l.pid IS DISTINCT FROM pg_backend_pid())
FROM (SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS last FROM sequencing.outbox_id_seq OFFSET 0) h;

-- name: still_writing
SELECT count(*) FROM pg_locks l
WHERE l.locktype = 'relation' AND l.relation = 'sequencing.outbox'::regclass
  AND l.mode = 'RowExclusiveLock' AND l.virtualtransaction = ANY (%s);

-- name: page
SELECT o.id, sequencing.event_line(o) FROM sequencing.outbox o
WHERE o.id > %(after)s AND o.id <= %(upto)s AND (%(types)s::text[] IS NULL OR o.type = ANY (%(types)s))
ORDER BY o.id
LIMIT %(limit)s;

-- name: ensure_group
INSERT INTO sequencing.event_group (name, types, position) VALUES (%s, %s, %s)
ON CONFLICT (name) DO NOTHING;

-- name: select_group
SELECT id, types, position FROM sequencing.event_group WHERE name = %s;

-- name: select_group_for_update
SELECT id, types, position FROM sequencing.event_group WHERE name = %s FOR UPDATE;

-- name: lock_group
SELECT position, types FROM sequencing.event_group WHERE id = %s FOR UPDATE;

-- name: try_slot
-- A collector's slot: the advisory lock (class 7262005, group id * 8 + slot), held by its session.
SELECT pg_try_advisory_lock(%s, %s);

-- name: release_slot
SELECT pg_advisory_unlock(%s, %s);

-- name: take_slot
INSERT INTO sequencing.event_group_member (group_id, slot, token, backend_pid, host, pid)
VALUES (%(group)s, %(slot)s, %(token)s, pg_backend_pid(), %(host)s, %(pid)s)
ON CONFLICT (group_id, slot) DO UPDATE
SET token = excluded.token, backend_pid = excluded.backend_pid, host = excluded.host, pid = excluded.pid,
    joined_at = now();

-- name: reclaim
-- The oldest lease whose collector is gone (slot lock released, or the slot taken by a newer
-- collector) or whose time ran out. A collector is live while its session holds its slot's
-- advisory lock: class 7262005 (events.GROUP_LOCK_CLASS), key group id * 8 + slot.
UPDATE sequencing.event_group_lease l
SET slot = %(slot)s, token = %(token)s, expires_at = now() + %(lease)s, handed_out = l.handed_out + 1
WHERE l.id = (
    SELECT x.id FROM sequencing.event_group_lease x
    LEFT JOIN sequencing.event_group_member m ON m.group_id = x.group_id AND m.slot = x.slot AND m.token = x.token
    WHERE x.group_id = %(group)s AND x.token <> %(token)s
      AND (x.expires_at < now() OR m.token IS NULL
           OR NOT EXISTS (SELECT 1 FROM pg_locks k
                          WHERE k.locktype = 'advisory' AND k.classid = 7262005::oid
                            AND k.objid = (m.group_id * 8 + m.slot)::oid AND k.objsubid = 2
                            AND k.pid = m.backend_pid AND k.granted))
    ORDER BY x.after_id
    LIMIT 1
)
RETURNING l.id, l.after_id, l.last_id, l.handed_out;

-- name: shrink_lease
UPDATE sequencing.event_group_lease SET last_id = %s WHERE id = %s;

-- name: split_lease
-- The rest of a range too long for the taker's --limit: left for the next collector at once.
INSERT INTO sequencing.event_group_lease (group_id, after_id, last_id, slot, token, expires_at, handed_out)
VALUES (%s, %s, %s, 0, gen_random_uuid(), now(), %s);

-- name: new_lease
INSERT INTO sequencing.event_group_lease (group_id, after_id, last_id, slot, token, expires_at)
VALUES (%s, %s, %s, %s, %s, now() + %s) RETURNING id;

-- name: advance
UPDATE sequencing.event_group SET position = %s WHERE id = %s;

-- name: ack
DELETE FROM sequencing.event_group_lease WHERE id = %s AND token = %s;

-- name: list_groups
SELECT g.name, g.types, g.position,
       (SELECT count(*) FROM sequencing.event_group_member m
        WHERE m.group_id = g.id
          AND EXISTS (SELECT 1 FROM pg_locks k
                      WHERE k.locktype = 'advisory' AND k.classid = 7262005::oid
                        AND k.objid = (m.group_id * 8 + m.slot)::oid AND k.objsubid = 2
                        AND k.pid = m.backend_pid AND k.granted)),
       (SELECT count(*) FROM sequencing.outbox o
        WHERE o.id > g.position AND (g.types IS NULL OR o.type = ANY (g.types))),
       (SELECT count(*) FROM sequencing.event_group_lease l JOIN sequencing.outbox o
             ON o.id > l.after_id AND o.id <= l.last_id AND (g.types IS NULL OR o.type = ANY (g.types))
        WHERE l.group_id = g.id),
       g.created_at
FROM sequencing.event_group g
ORDER BY g.name;

-- name: live_members
SELECT count(*) FROM sequencing.event_group_member m
WHERE m.group_id = %s
  AND EXISTS (SELECT 1 FROM pg_locks k
              WHERE k.locktype = 'advisory' AND k.classid = 7262005::oid
                AND k.objid = (m.group_id * 8 + m.slot)::oid AND k.objsubid = 2
                AND k.pid = m.backend_pid AND k.granted);

-- name: drop_group
DELETE FROM sequencing.event_group WHERE id = %s;
