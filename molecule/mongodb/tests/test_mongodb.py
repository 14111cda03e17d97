"""MongoDB as the application sees it: authentication, GridFS, indexes.

Everything goes through MongoDB's wire protocol with pymongo from the
controller, as the application will (and through systemd and dpkg on the
hosts for what the role promised about packages and the service).
"""

from __future__ import annotations

import hashlib
import os

import gridfs
import pytest
import yaml
from pymongo.errors import OperationFailure
from pymongo.write_concern import WriteConcern

SINGLE = "mongodb-single"
MEMBERS = ["mongodb-rs1", "mongodb-rs2", "mongodb-rs3"]
APP_DB = "celery"
SERVERS = [SINGLE, MEMBERS[0]]
UNAUTHORIZED = 13
TTL_SECONDS = 86400


def _roundtrip(db, payload: bytes) -> None:
    bucket = gridfs.GridFSBucket(db)
    name = "test-" + hashlib.sha256(payload).hexdigest()[:16]
    file_id = bucket.upload_from_stream(name, payload)
    try:
        assert bucket.open_download_stream(file_id).read() == payload
        assert bucket.open_download_stream_by_name(name).read() == payload
    finally:
        bucket.delete(file_id)


@pytest.mark.parametrize("server", SERVERS)
def test_app_user_writes_and_reads_through_gridfs(connect, primary, server):
    host = primary if server in MEMBERS else server
    db = connect(host, "app")[APP_DB]
    _roundtrip(db, os.urandom(600 * 1024))  # several 255 KiB chunks


@pytest.mark.parametrize("server", SERVERS)
def test_app_user_is_refused_on_other_databases(connect, primary, server):
    host = primary if server in MEMBERS else server
    client = connect(host, "app")
    with pytest.raises(OperationFailure) as write:
        client["other"]["things"].insert_one({"x": 1})
    assert write.value.code == UNAUTHORIZED
    with pytest.raises(OperationFailure) as read:
        client["admin"]["system.users"].find_one()
    assert read.value.code == UNAUTHORIZED
    with pytest.raises(OperationFailure) as drop:
        client.drop_database("other")
    assert drop.value.code == UNAUTHORIZED


@pytest.mark.parametrize("server", [SINGLE] + MEMBERS)
def test_unauthenticated_client_is_refused(connect, server):
    client = connect(server)
    with pytest.raises(OperationFailure) as listing:
        client.list_database_names()
    assert listing.value.code == UNAUTHORIZED
    with pytest.raises(OperationFailure) as write:
        client[APP_DB]["fs.files"].insert_one({"filename": "anonymous"})
    assert write.value.code == UNAUTHORIZED


def test_wrong_password_is_refused(connect, address):
    import pymongo

    client = pymongo.MongoClient(host=address(SINGLE), port=27017, directConnection=True,
                                 username="celery", password="not-the-password",
                                 authSource=APP_DB, serverSelectionTimeoutMS=5000)
    with pytest.raises(OperationFailure):
        client[APP_DB].command("ping")
    client.close()


@pytest.mark.parametrize("server", SERVERS)
def test_monitoring_user_sees_status_not_data(connect, primary, server):
    host = primary if server in MEMBERS else server
    client = connect(host, "monitor")
    assert client.admin.command("serverStatus")["ok"] == 1
    with pytest.raises(OperationFailure) as read:
        client[APP_DB]["fs.files"].find_one()
    assert read.value.code == UNAUTHORIZED


@pytest.mark.parametrize("server", SERVERS)
def test_gridfs_and_ttl_indexes(connect, primary, server):
    host = primary if server in MEMBERS else server
    db = connect(host, "app")[APP_DB]
    files = db["fs.files"].index_information()
    assert files["filename_1_uploadDate_1"]["key"] == [("filename", 1), ("uploadDate", 1)]
    chunks = db["fs.chunks"].index_information()
    assert chunks["files_id_1_n_1"]["key"] == [("files_id", 1), ("n", 1)]
    assert chunks["files_id_1_n_1"]["unique"] is True
    results = db["celery_taskmeta"].index_information()
    assert results["date_done_ttl"]["key"] == [("date_done", -1)]
    assert results["date_done_ttl"]["expireAfterSeconds"] == TTL_SECONDS


def test_celery_can_still_create_its_own_index(connect):
    """Celery's MongoDB backend runs create_index('date_done') on first use."""
    db = connect(SINGLE, "app")[APP_DB]
    assert db["celery_taskmeta"].create_index("date_done", background=True) == "date_done_1"


def test_replica_set_has_three_healthy_members(connect, primary):
    status = connect(MEMBERS[0], "monitor").admin.command("replSetGetStatus")
    assert status["set"] == "rs0"
    assert sorted(m["name"] for m in status["members"]) == [f"{m}:27017" for m in MEMBERS]
    assert all(m["health"] == 1 for m in status["members"])
    assert sorted(m["stateStr"] for m in status["members"]) == ["PRIMARY", "SECONDARY", "SECONDARY"]
    # The first member has the higher priority, so it is the primary.
    assert primary == MEMBERS[0]


def test_a_file_written_on_the_primary_is_on_every_member(connect, primary):
    payload = os.urandom(300 * 1024)
    db = connect(primary, "app")[APP_DB].with_options(write_concern=WriteConcern(w=3, wtimeout=30000))
    bucket = gridfs.GridFSBucket(db)
    file_id = bucket.upload_from_stream("replicated", payload)
    try:
        for member in MEMBERS:
            member_db = connect(member, "app", readPreference="secondaryPreferred")[APP_DB]
            assert gridfs.GridFSBucket(member_db).open_download_stream(file_id).read() == payload
    finally:
        bucket.delete(file_id)


@pytest.mark.parametrize("server", [SINGLE] + MEMBERS)
def test_packages_are_pinned_and_held(node, server):
    host = node(server)
    held = host.check_output("apt-mark showhold").split()
    assert "mongodb-org-server" in held and "mongodb-mongosh" in held
    version = host.check_output("dpkg-query -W -f='${Version}' mongodb-org-server")
    assert version.startswith("8.0.")


@pytest.mark.parametrize("server", [SINGLE] + MEMBERS)
def test_mongod_runs_with_the_configuration_of_its_version(node, server):
    host = node(server)
    assert host.service("mongod").is_running and host.service("mongod").is_enabled
    conf = yaml.safe_load(host.file("/etc/mongod.conf").content_string)
    assert "journal" not in conf["storage"]
    assert conf["security"]["authorization"] == "enabled"
    assert conf["systemLog"]["logRotate"] == "reopen"
    pid = host.check_output("systemctl show -p MainPID --value mongod")
    limits = host.file(f"/proc/{pid}/limits").content_string
    assert any(line.startswith("Max open files") and "16384" in line for line in limits.splitlines())
    environ = host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    assert "GLIBC_TUNABLES=glibc.pthread.rseq=0" in environ.splitlines()


def test_keyfile_is_private(node):
    keyfile = node(MEMBERS[1]).file("/etc/mongod.keyfile")
    assert keyfile.user == "mongodb" and keyfile.mode == 0o400


def test_log_rotation_reopens_the_log(node):
    host = node(SINGLE)
    host.check_output("logrotate --force /etc/logrotate.d/mongod")
    assert host.file("/var/log/mongodb/mongod.log.1").exists
    host.check_output("sleep 2")
    assert host.file("/var/log/mongodb/mongod.log").exists
    assert host.service("mongod").is_running
