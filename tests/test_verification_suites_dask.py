"""Reference suites on Dask: a LocalCluster of two worker processes, started here (no
external service), runs the same sweep and check as the process pool; a worker killed
mid-sweep is replaced and its problem computed elsewhere."""

import os
import threading
import time

import pytest

if os.environ.get("CI") == "true":  # CI installs the dask extra: a skip there would hide it
    import distributed
else:
    distributed = pytest.importorskip("distributed", reason="needs the dask extra")

from suite_helpers import FLIPPED, GRAD, SMALL, kill_first_worker

from verification import check_suite, drawn_problems, grid_problems, sweep
from verification._executors import open_backend
from verification._reference_file import load_reference
from verification._suite_contents import read_suite
from verification._suite_files import read_lines


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as local:
        yield local.scheduler_address


def test_sweep_and_check_on_a_local_cluster(cluster, tmp_path):
    problems = drawn_problems(4, 2, **SMALL)
    out = tmp_path / "suite"
    result = sweep(problems, out, scheduler=cluster)
    assert result.complete and result.where.startswith(f"Dask at {cluster} (2 worker")
    assert result.written + len(result.failed) == 4 and result.written >= 3
    pool = sweep(problems, tmp_path / "pool", workers=1)  # the same files either way
    assert sorted(read_suite(out).references.items()) == sorted(
        read_suite(tmp_path / "pool").references.items())
    assert pool.written == result.written
    good = check_suite(out, GRAD, scheduler=cluster)
    bad = check_suite(out, FLIPPED, scheduler=cluster)
    assert good.passed and len(good.named("pass")) == result.written
    assert list(bad.by_diagnosis()) == ["opposite sign"]
    assert len(bad.named("fail")) == result.written


def test_a_dask_worker_killed_mid_sweep_loses_no_problem(cluster, tmp_path):
    out = tmp_path / "suite"
    problems = grid_problems("lotka_volterra", {"alpha": [0.8, 0.9, 1.0, 1.1, 1.2]})
    killed = []
    killer = threading.Thread(target=kill_first_worker,
                              args=(out / "index.jsonl", killed, time.monotonic() + 60))
    killer.start()
    result = sweep(problems, out, scheduler=cluster)
    killer.join()
    assert killed and result.complete, str(result)
    assert result.written == len(problems) and not result.failed
    workers = {e["worker"] for e in read_lines(out / "index.jsonl").entries.values()}
    assert len(workers) >= 2, "no other worker took over"
    assert len(read_suite(out).references) == len(problems)
    for entry in read_lines(out / "index.jsonl").entries.values():
        load_reference(out / entry["file"])
    client = distributed.Client(cluster)
    try:  # the nanny replaces the killed worker: the cluster is whole for what follows
        client.wait_for_workers(2, timeout=60)
    finally:
        client.close()


def test_scheduler_local_starts_and_stops_its_own_cluster():
    with open_backend("local", 1) as backend:
        assert backend.description.startswith("a Dask LocalCluster of 1 processes")
        assert backend.executor().submit(os.getpid).result(timeout=60) != os.getpid()


def test_an_unreachable_scheduler_is_a_clear_error():
    from numeric import InputError

    with pytest.raises(InputError, match="cannot reach the Dask scheduler"), \
            open_backend("nowhere://host:1", 1):
        pass
