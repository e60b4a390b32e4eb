"""Webhook subscribers: secrets shown once and masked after, signatures an independent verifier accepts."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import pytest
from standardwebhooks.webhooks import Webhook

from trackctl import webhooks
from trackctl.errors import AlreadyExists, InvalidValue, NotFound, UsageError
from webhook_endpoint import UNRESOLVABLE_URL, WebhookEndpoint, always

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


def test_signatures_match_the_standardwebhooks_package():
    body = '{"id":"evt_1","data":{"label":"Em trânsito"}}'.encode()
    ours = webhooks.sign(webhooks.secret_key(SECRET), "evt_1", 1_700_000_000, body)
    theirs = Webhook(SECRET).sign("evt_1", datetime.fromtimestamp(1_700_000_000, timezone.utc), body.decode())
    assert ours == theirs


def test_generated_secrets_are_whsec_base64_of_32_random_bytes():
    a, b = webhooks.generate_secret(), webhooks.generate_secret()
    assert a != b and a.startswith("whsec_") and len(webhooks.secret_key(a)) == 32
    Webhook(a)  # the independent implementation accepts it


@pytest.mark.parametrize("bad", ["sk_live_abcdef", "whsec_not*base64*at*all!", "whsec_" + base64.b64encode(b"short").decode()])
def test_a_malformed_secret_is_refused_without_being_echoed(bad):
    with pytest.raises(InvalidValue) as info:
        webhooks.secret_key(bad)
    assert bad not in str(info.value) and bad[6:] not in str(info.value)


def test_retry_schedules_parse_and_format():
    assert webhooks.parse_schedule("0s,5s,5m,30m,2h,5h,10h,10h") == list(webhooks.DEFAULT_SCHEDULE)
    assert webhooks.parse_schedule("0,1,1") == [0, 1, 1]
    assert webhooks.format_schedule([0, 5, 300, 7200, 86400]) == "0s,5s,5m,2h,1d"
    for bad in ("", "1s,,2s", "5 parsecs", "-1s"):
        with pytest.raises(InvalidValue):
            webhooks.parse_schedule(bad)


def test_a_generated_secret_is_printed_once_and_masked_everywhere_after(cli, conn):
    added = cli("webhook", "add", "http://127.0.0.1:9/hook", "--format", "json")
    assert added.returncode == 0, added
    record = json.loads(added.stdout)
    secret = record["secret"]
    assert secret.startswith("whsec_") and len(webhooks.secret_key(secret)) == 32
    assert "store it now" in added.stderr and secret not in added.stderr
    assert conn.execute("SELECT secret FROM sequencing.webhook_subscriber").fetchone()[0] == secret
    for fmt in ("plain", "json", "csv"):
        listed = cli("webhook", "list", "--format", fmt)
        assert listed.returncode == 0, listed
        assert secret not in listed.stdout and secret[6:20] not in listed.stdout
        assert webhooks.mask_secret(secret) in listed.stdout


def test_a_given_secret_is_never_printed(cli):
    r = cli("webhook", "add", "http://127.0.0.1:9/hook", "--secret", SECRET, "--types",
            "shipment.status_changed,shipment.stale", "--retry-schedule", "0s,1s")
    assert r.returncode == 0, r
    assert SECRET not in r.stdout + r.stderr and "whsec_…" in r.stdout
    assert "shipment.status_changed,shipment.stale" in r.stdout and "0s,1s" in r.stdout
    again = cli("webhook", "add", "http://127.0.0.1:9/hook")
    assert again.returncode == 1 and "already exists" in again.stderr
    bad = cli("webhook", "add", "http://127.0.0.1:9/other", "--secret", "whsec_oops-" + SECRET[6:])
    assert bad.returncode == 2 and SECRET[6:] not in bad.stderr
    unknown = cli("webhook", "add", "http://127.0.0.1:9/other", "--types", "tracking.lost")
    assert unknown.returncode == 2 and "unknown event type" in unknown.stderr


def test_types_filter_which_events_a_subscriber_gets(conn):
    from trackctl import outbox

    only_stale = webhooks.add_subscriber(conn, "http://127.0.0.1:9/stale", types=["shipment.stale"])
    everything = webhooks.add_subscriber(conn, "http://127.0.0.1:9/all")
    outbox.record(conn, "shipment.stale", {"code": "A"})
    outbox.record(conn, "tracking.assigned", {"code": "B"})
    counts = dict(conn.execute("SELECT subscriber_id, count(*) FROM sequencing.webhook_delivery "
                               "GROUP BY subscriber_id").fetchall())
    assert counts == {only_stale.id: 1, everything.id: 2}


def test_remove_deletes_the_subscriber_and_its_deliveries(cli, conn):
    from trackctl import outbox

    sub = webhooks.add_subscriber(conn, "http://127.0.0.1:9/hook")
    outbox.record(conn, "shipment.stale", {"code": "A"})
    r = cli("webhook", "remove", str(sub.id))
    assert r.returncode == 0 and "removed webhook" in r.stderr
    assert conn.execute("SELECT count(*) FROM sequencing.webhook_delivery").fetchone()[0] == 0
    missing = cli("webhook", "remove", str(sub.id))
    assert missing.returncode == 1 and "no webhook" in missing.stderr


def test_rotation_sends_both_signatures_and_each_secret_verifies(cli, conn):
    from trackctl import outbox

    with WebhookEndpoint(SECRET) as old_only:
        sub = webhooks.add_subscriber(conn, old_only.url, secret=SECRET)
        rotated = cli("webhook", "rotate-secret", str(sub.id), "--format", "json")
        assert rotated.returncode == 0, rotated
        new_secret = json.loads(rotated.stdout)["secret"]
        assert new_secret != SECRET and "old one also signs until" in rotated.stderr
        old_only.extra_secrets = (new_secret,)  # every request must verify with both secrets
        outbox.record(conn, "shipment.stale", {"code": "A"})
        r = cli("notify")
        assert r.returncode == 0, r
        assert len(old_only.received) == 1 and old_only.unverified() == []
        assert len(old_only.received[0].headers["webhook-signature"].split(" ")) == 2
        listed = cli("webhook", "list", "--format", "json")
        assert new_secret not in listed.stdout and json.loads(listed.stdout)[0]["rotating_until"]


def test_deliveries_and_replay_commands(cli, conn):
    from trackctl import outbox

    sub = webhooks.add_subscriber(conn, "http://127.0.0.1:9/hook")
    outbox.record(conn, "shipment.stale", {"code": "A"})
    listed = cli("webhook", "deliveries", "--status", "pending", "--subscriber", str(sub.id), "--format", "json")
    assert listed.returncode == 0, listed
    [row] = json.loads(listed.stdout)
    assert row["status"] == "pending" and row["attempts"] == 0 and row["type"] == "shipment.stale"
    pending = cli("webhook", "replay", str(row["id"]))
    assert pending.returncode == 2 and "already pending" in pending.stderr
    usage = cli("webhook", "replay")
    assert usage.returncode == 2
    none = cli("webhook", "replay", "--dead")
    assert none.returncode == 0 and "no dead deliveries" in none.stderr
    bad = cli("webhook", "deliveries", "--status", "lost")
    assert bad.returncode == 2 and "unknown delivery status" in bad.stderr


# --- webhook set -------------------------------------------------------------------------------

def test_set_changes_url_types_and_cap_and_keeps_the_secret(conn):
    sub = webhooks.add_subscriber(conn, "http://127.0.0.1:9/a", secret=SECRET, types=["shipment.stale"])
    changed = webhooks.update_subscriber(conn, sub.id, url="http://127.0.0.1:9/b", max_in_flight=3)
    assert (changed.url, changed.types, changed.max_in_flight, changed.secret) == \
        ("http://127.0.0.1:9/b", ["shipment.stale"], 3, SECRET)
    assert webhooks.update_subscriber(conn, sub.id, types=webhooks.ALL_TYPES).types is None
    assert webhooks.update_subscriber(conn, sub.id, types=["tracking.assigned"]).types == ["tracking.assigned"]


def test_set_refuses_nonsense_and_changes_nothing(conn):
    sub = webhooks.add_subscriber(conn, "http://127.0.0.1:9/a", secret=SECRET)
    other = webhooks.add_subscriber(conn, "http://127.0.0.1:9/b", secret=SECRET)
    with pytest.raises(UsageError):
        webhooks.update_subscriber(conn, sub.id)
    with pytest.raises(InvalidValue):
        webhooks.update_subscriber(conn, sub.id, url="ftp://x", max_in_flight=4)
    with pytest.raises(InvalidValue):
        webhooks.update_subscriber(conn, sub.id, types=["no.such.type"], max_in_flight=4)
    with pytest.raises(InvalidValue):
        webhooks.update_subscriber(conn, sub.id, max_in_flight=0)
    with pytest.raises(AlreadyExists):
        webhooks.update_subscriber(conn, sub.id, url=other.url, max_in_flight=4)
    with pytest.raises(NotFound):
        webhooks.update_subscriber(conn, 999_999, max_in_flight=4)
    assert webhooks.get_subscriber(conn, sub.id) == sub


def test_webhook_set_command(cli, conn):
    sub = webhooks.add_subscriber(conn, "http://127.0.0.1:9/a", secret=SECRET, types=["shipment.stale"])
    r = cli("webhook", "set", str(sub.id), "--url", "http://127.0.0.1:9/new", "--types", "*",
            "--max-in-flight", "5", "--format", "json")
    assert r.returncode == 0, r
    shown = json.loads(r.stdout)
    assert (shown["url"], shown["types"], shown["max_in_flight"]) == ("http://127.0.0.1:9/new", "*", 5)
    assert SECRET not in r.stdout + r.stderr and "updated" in r.stderr
    assert webhooks.get_subscriber(conn, sub.id).types is None
    bad = cli("webhook", "set", str(sub.id))
    assert bad.returncode == 2 and bad.stderr.startswith("trackctl: error: nothing to change"), bad
    missing = cli("webhook", "set", "424242", "--max-in-flight", "2")
    assert missing.returncode == 1 and "no webhook with id 424242" in missing.stderr


# --- webhook test ------------------------------------------------------------------------------

def test_ping_is_signed_like_a_delivery_and_reports_the_status(conn):
    from trackctl.lanes import ping_subscriber

    with WebhookEndpoint(SECRET) as hook:
        sub = webhooks.add_subscriber(conn, hook.url, secret=SECRET)
        result = ping_subscriber(conn, sub.id, timeout=10)
        assert result.ok and result.status == 200 and result.error is None
        [got] = hook.received
        assert got.verified and got.event_id == result.event_id  # the standardwebhooks package accepts it
        assert got.body["type"] == "webhook.test" and got.body["data"] == {"subscriber_id": sub.id}
        assert got.headers["user-agent"].startswith("trackctl/")
        hook.plan = always(500)
        failed = ping_subscriber(conn, sub.id, timeout=10)
        assert (failed.ok, failed.status, failed.error) == (False, 500, "HTTP 500")
    # Nothing queued, nothing recorded
    assert conn.execute("SELECT count(*) FROM sequencing.webhook_delivery").fetchone() == (0,)


def test_webhook_test_command_prints_the_status_and_exits_1_on_failure(cli, conn):
    with WebhookEndpoint(SECRET) as hook:
        sub = webhooks.add_subscriber(conn, hook.url, secret=SECRET)
        r = cli("webhook", "test", str(sub.id), "--format", "json")
        assert r.returncode == 0, r
        assert json.loads(r.stdout)["status"] == 200 and len(hook.received) == 1
        hook.plan = always(503)
        r = cli("webhook", "test", str(sub.id), "--format", "json")
        assert r.returncode == 1 and json.loads(r.stdout)["status"] == 503, r
        assert r.stderr.startswith(f"trackctl: error: webhook {sub.id} did not accept the test event: HTTP 503")
    nowhere = webhooks.add_subscriber(conn, UNRESOLVABLE_URL, secret=SECRET)
    r = cli("webhook", "test", str(nowhere.id), "--format", "json")
    assert r.returncode == 1 and json.loads(r.stdout)["status"] is None, r
    assert "host name not found: hooks.trackctl-test.invalid" in r.stderr
    assert SECRET not in r.stdout + r.stderr
