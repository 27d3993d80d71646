"""Worker heartbeat (file and row) and the health checks that read them."""

import os
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from health_check.exceptions import ServiceUnavailable, ServiceWarning

from risk.health import RiskSweepCheck, WorkerHeartbeatCheck, worker_heartbeat_age_seconds
from risk.heartbeat import WorkerHeartbeatStep, heartbeat_file_age, main, touch_heartbeat_file
from risk.models import SweepTick, WorkerHeartbeat
from risk.services import worker_heartbeat_record


@pytest.mark.django_db
def test_heartbeat_row_is_one_per_worker_and_moves_forward():
    t0 = timezone.now() - timedelta(seconds=20)
    worker_heartbeat_record(worker="celery@a", pid=11, started_at=t0, now=t0)
    worker_heartbeat_record(worker="celery@a", pid=11, started_at=t0, now=t0 + timedelta(seconds=5))
    worker_heartbeat_record(worker="celery@b", pid=12, started_at=t0, now=t0 + timedelta(seconds=1))
    rows = dict(WorkerHeartbeat.objects.values_list("worker", "beat_at"))
    assert rows == {"celery@a": t0 + timedelta(seconds=5), "celery@b": t0 + timedelta(seconds=1)}
    age = worker_heartbeat_age_seconds(now=t0 + timedelta(seconds=7))
    assert age == pytest.approx(2.0)


@pytest.mark.django_db
def test_worker_heartbeat_check():
    with pytest.raises(ServiceUnavailable, match="ever reported"):
        WorkerHeartbeatCheck().run()
    worker_heartbeat_record(worker="celery@a", pid=1, started_at=None)
    WorkerHeartbeatCheck().run()  # fresh: no exception
    WorkerHeartbeat.objects.update(beat_at=timezone.now() - timedelta(seconds=45))
    with pytest.raises(ServiceUnavailable, match="45 s old|4[4-6] s old"):
        WorkerHeartbeatCheck().run()


@pytest.mark.django_db
def test_risk_sweep_check():
    with pytest.raises(ServiceWarning):
        RiskSweepCheck().run()
    now = timezone.now()
    SweepTick.objects.create(tick=1, interval_seconds=3, started_at=now, finished_at=now)
    RiskSweepCheck().run()
    SweepTick.objects.update(finished_at=now - timedelta(minutes=5))
    with pytest.raises(ServiceWarning, match="ago"):
        RiskSweepCheck().run()


def test_heartbeat_file_and_container_check(tmp_path, capsys):
    path = tmp_path / "hb" / "worker-heartbeat"
    assert heartbeat_file_age(path) is None
    assert main(["--file", str(path), "--max-age", "30"]) == 1
    touch_heartbeat_file(path)
    assert heartbeat_file_age(path) < 5
    assert main(["--file", str(path), "--max-age", "30"]) == 0
    old = time.time() - 120
    os.utime(path, (old, old))
    assert main(["--file", str(path), "--max-age", "30"]) == 1
    assert "unhealthy: heartbeat is 120s old" in capsys.readouterr().out


@pytest.fixture
def keep_test_connection(monkeypatch):
    # The step closes the connection after each beat (right in a worker, fatal to the
    # test's wrapping transaction).
    monkeypatch.setattr("django.db.close_old_connections", lambda: None)


@pytest.mark.django_db
def test_step_beat_writes_file_and_row(tmp_path, settings, keep_test_connection):
    settings.WORKER_HEARTBEAT_FILE = str(tmp_path / "hb")

    class FakeWorker:
        hostname = "celery@test"

    step = WorkerHeartbeatStep.__new__(WorkerHeartbeatStep)
    step.started_at = timezone.now()
    step.beat(FakeWorker())
    assert heartbeat_file_age(tmp_path / "hb") < 5
    row = WorkerHeartbeat.objects.get(worker="celery@test")
    assert row.pid == os.getpid()


@pytest.mark.django_db
def test_step_beat_survives_a_database_error(tmp_path, settings, monkeypatch, keep_test_connection):
    settings.WORKER_HEARTBEAT_FILE = str(tmp_path / "hb")

    def broken(**kwargs):
        from django.db import OperationalError

        raise OperationalError("database is down")

    monkeypatch.setattr("risk.services.worker_heartbeat_record", broken)

    class FakeWorker:
        hostname = "celery@test"

    step = WorkerHeartbeatStep.__new__(WorkerHeartbeatStep)
    step.started_at = timezone.now()
    step.beat(FakeWorker())  # no exception: the worker keeps running
    assert heartbeat_file_age(tmp_path / "hb") < 5  # the file still says the process lives
    assert not WorkerHeartbeat.objects.exists()


@pytest.mark.django_db
def test_history_prune_keeps_a_week():
    from risk.services import risk_history_prune

    now = timezone.now()
    SweepTick.objects.create(tick=1, interval_seconds=3, started_at=now - timedelta(days=8))
    SweepTick.objects.create(tick=2, interval_seconds=3, started_at=now - timedelta(days=6))
    worker_heartbeat_record(worker="celery@gone", pid=1, started_at=None, now=now - timedelta(days=9))
    worker_heartbeat_record(worker="celery@live", pid=2, started_at=None, now=now)
    assert risk_history_prune(now=now) == (1, 1)
    assert list(SweepTick.objects.values_list("tick", flat=True)) == [2]
    assert list(WorkerHeartbeat.objects.values_list("worker", flat=True)) == ["celery@live"]
