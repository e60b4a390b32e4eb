def test_fresh_database_has_the_default_pool(conn):
    from trackctl.pools import pool_levels

    assert [(p.name, p.target, p.free) for p in pool_levels(conn)] == [("default", 200, 0)]


def test_cli_lists_pools(cli):
    r = cli("pool", "list")
    assert r.returncode == 0, r
    assert r.stdout == "default\tuuid\t200\t0\t0\n"
