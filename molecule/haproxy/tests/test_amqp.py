"""AMQP through HAProxy: balanced over the cluster, health-checked, TLS."""

from __future__ import annotations

from haproxy_helpers import (
    amqp_connection,
    delete_queue,
    get_one,
    new_queue_name,
    publish,
    server_states,
    wait_until,
)


def test_every_broker_passes_the_amqp_health_check(stats, brokers):
    """Both nodes are UP through the AMQP-aware check (L7OK: connection.start seen)."""

    def all_up():
        rows = stats()
        checks = {
            server: row["check_status"]
            for (proxy, server), row in rows.items()
            if proxy == "be_rabbitmq_amqp" and server in brokers
        }
        ok = server_states(rows, "be_rabbitmq_amqp") == {b: "UP" for b in brokers}
        return ok and all(status == "L7OK" for status in checks.values()) and checks

    checks = wait_until(all_up, what="every broker UP with an L7OK AMQP check")
    assert set(checks) == set(brokers)


def test_message_published_through_haproxy_is_consumed_from_the_nodes(
    lb_address, brokers, address, app_credentials
):
    queue = new_queue_name()
    bodies = [f"via haproxy to {broker}" for broker in brokers]
    with amqp_connection(lb_address, 5672, app_credentials) as conn:
        publish(conn, queue, bodies)
    received = []
    try:
        # One message taken from each node directly: the cluster serves the
        # queue wherever it lives.
        for broker in brokers:
            with amqp_connection(address(broker), 5672, app_credentials) as conn:
                received.append(get_one(conn, queue))
    finally:
        with amqp_connection(address(brokers[0]), 5672, app_credentials) as conn:
            delete_queue(conn, queue)
    assert sorted(received) == sorted(bodies)


def test_tls_listener_terminates_amqps(lb, lb_address, brokers, address, app_credentials, tls_ca):
    """AMQPS on 5671 with a verified certificate; the broker behind speaks plain AMQP."""
    queue = new_queue_name("haproxy-tls")
    tls = {"context": {"cafile": str(tls_ca), "check_hostname": True}, "server_hostname": lb}
    with amqp_connection(lb_address, 5671, app_credentials, ssl=tls) as conn:
        assert conn.transport.sock.version() in ("TLSv1.2", "TLSv1.3")
        publish(conn, queue, ["over tls"])
    with amqp_connection(address(brokers[0]), 5672, app_credentials) as conn:
        try:
            assert get_one(conn, queue) == "over tls"
        finally:
            delete_queue(conn, queue)


def test_amqp_connections_are_logged_to_the_journal(node, lb, lb_address, app_credentials):
    """One tcplog line per closed AMQP connection, in the journal."""
    with amqp_connection(lb_address, 5672, app_credentials):
        pass

    def logged():
        out = node(lb).run("journalctl -t haproxy --no-pager -n 200 -o cat")
        return [line for line in out.stdout.splitlines() if "ft_amqp be_rabbitmq_amqp/" in line]

    assert wait_until(logged, timeout=30, what="an ft_amqp line in the journal")
