"""Shadow and A/B experiments in the prediction service, with stand-in registries: production is version 3
(1,000 per square foot), the `staging` candidate version 4 (1.1 times that)."""

import json
import os
import tempfile
import time
import weakref
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serving_stand_ins import HOUSE_PRICES, Candidate, DeclaredExperiment, FixedRegistry

from mlops_sandbox.config import Settings
from mlops_sandbox.experiment import assign_variant
from mlops_sandbox.serve.app import create_app
from mlops_sandbox.serve.model import ServedModel
from mlops_sandbox.serve.schema import EXAMPLES

pytestmark = pytest.mark.unit

RECORD = EXAMPLES["house_prices"]
SHADOW = {"serving_mode": "shadow"}
AB_HALF = {"serving_mode": "ab", "serving_ab_share": "0.5"}


class Captured:
    """Stands in for a PredictionCapture: keeps what the service logs, in a file, so that what the shadow
    scorer process captures (its `writer` is this too) is seen here."""

    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="captured-", suffix=".jsonl")
        os.close(fd)
        weakref.finalize(self, Path(self.path).unlink, missing_ok=True)

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def log(self, lines: bytes, count: int) -> None:
        assert len(lines.splitlines()) == count
        with open(self.path, "ab") as f:
            f.write(lines)

    def writer(self) -> "Captured":
        return self

    def keep_up(self) -> None:
        return None

    def close_segment(self) -> None:
        pass

    def rows(self) -> list[dict]:
        data = Path(self.path).read_bytes()
        complete = data[: data.rfind(b"\n") + 1]  # a line the scorer process is still appending is not read yet
        return [json.loads(line) for line in complete.splitlines()]

    def __iter__(self):
        return iter(self.rows())

    def __len__(self) -> int:
        return len(self.rows())


def _client(experiment: DeclaredExperiment, capture: Captured | None = None) -> TestClient:
    # "testserver": the Host that TestClient sends
    settings = Settings(
        _env_file=None, model_poll_seconds=3600, capture_enabled=False, predictor_allowed_hosts="testserver"
    )
    return TestClient(create_app(settings, FixedRegistry("house-prices", "http://unused"), capture, experiment))


def _experiment_seen(client: TestClient, mode: str) -> dict:
    """/health's experiment once the poller has read the declaration (it runs as the app starts)."""
    for _ in range(100):
        health = client.get("/health").json()
        if health["model_loaded"] and health["experiment"]["mode"] == mode:
            return health["experiment"]
        time.sleep(0.05)
    raise AssertionError(f"the experiment never became {mode}: {health}")


def test_no_experiment_declared_production_answers_everyone_and_rows_say_so():
    captured = Captured()
    with _client(DeclaredExperiment(), captured) as client:
        experiment = _experiment_seen(client, "off")
        answer = client.post("/predict", json=RECORD, headers={"X-Client-ID": "anyone"}).json()
    assert experiment == {
        "mode": "off",
        "share": None,
        "candidate_version": None,
        "production_version": "3",
        "running": False,
        "broken": None,
    }
    assert (answer["model_version"], answer["variant"]) == ("3", "production")
    assert [(r["variant"], r["model_version"]) for r in captured] == [("production", "3")]


def test_ab_answers_a_sticky_share_of_callers_with_the_candidate_by_client_id():
    captured = Captured()
    keys = [f"client-{i}" for i in range(40)]
    with _client(DeclaredExperiment(AB_HALF), captured) as client:
        experiment = _experiment_seen(client, "ab")
        answers = {}
        for key in keys * 2:  # every caller twice: the same variant both times
            answer = client.post("/predict", json=RECORD, headers={"X-Client-ID": key}).json()
            assert answers.setdefault(key, answer) == {**answer, "request_id": answers[key]["request_id"]}
        served = client.get("/model").json()["served"]
    assert experiment["share"] == 0.5 and experiment["candidate_version"] == "4" and experiment["running"]
    expected = {key: assign_variant(key, 0.5) for key in keys}
    assert {key: answer["variant"] for key, answer in answers.items()} == expected
    assert 0 < sum(v == "candidate" for v in expected.values()) < len(keys)  # both variants answered
    for answer in answers.values():
        production = answer["variant"] == "production"
        assert answer["model_version"] == ("3" if production else "4")
        assert answer["predictions"][0] == pytest.approx(RECORD["area"] * 1000 * (1 if production else 1.1))
    assert {(r["variant"], r["model_version"]) for r in captured} == {("production", "3"), ("candidate", "4")}
    assert not any(r.get("shadow") for r in captured)
    assert [(s["version"], s["role"]) for s in served] == [("3", "production"), ("4", "candidate (ab)")]


def test_without_a_client_id_a_caller_is_assigned_by_its_request_id():
    with _client(DeclaredExperiment(AB_HALF)) as client:
        _experiment_seen(client, "ab")
        for request_id in ("a", "b", "c", "d", "e", "f"):
            answer = client.post("/predict", json=RECORD, headers={"X-Request-ID": request_id}).json()
            assert answer["variant"] == assign_variant(request_id, 0.5)


def test_shadow_answers_with_production_and_captures_the_candidates_prediction_after_the_answer():
    captured = Captured()
    batch = [RECORD, {**RECORD, "area": 2000.0}]
    with _client(DeclaredExperiment(SHADOW), captured) as client:
        _experiment_seen(client, "shadow")
        answers = [client.post("/predict", json=batch, headers={"X-Request-ID": f"r{i}"}).json() for i in range(5)]
        for _ in range(100):  # the shadow lines follow the answers
            if sum(bool(r.get("shadow")) for r in captured) == 10:
                break
            time.sleep(0.05)
    assert {(a["model_version"], a["variant"]) for a in answers} == {("3", "production")}
    answered = [r for r in captured if not r.get("shadow")]
    shadows = {(r["request_id"], r["row"]): r for r in captured if r.get("shadow")}
    assert len(answered) == len(shadows) == 10
    for row in answered:
        shadow = shadows[row["request_id"], row["row"]]
        assert (row["variant"], row["model_version"]) == ("production", "3")
        assert (shadow["variant"], shadow["model_version"], shadow["production_version"]) == ("candidate", "4", "3")
        assert shadow["production_prediction"] == row["prediction"]
        assert shadow["prediction"] == pytest.approx(row["prediction"] * 1.1)
        assert shadow["inputs"] == row["inputs"]


@pytest.mark.parametrize("tags", [SHADOW, AB_HALF], ids=["shadow", "ab"])
def test_a_candidate_that_cannot_load_leaves_production_answering_and_the_experiment_marked_broken(tags):
    captured = Captured()
    with _client(DeclaredExperiment(tags, Candidate(factor=None)), captured) as client:
        experiment = _experiment_seen(client, tags["serving_mode"])
        answers = [client.post("/predict", json=RECORD, headers={"X-Client-ID": f"c{i}"}) for i in range(20)]
        metrics = client.get("/metrics").text
    assert "cannot be loaded" in experiment["broken"] and not experiment["running"]
    assert {(a.status_code, a.json()["variant"]) for a in answers} == {(200, "production")}
    assert {r["variant"] for r in captured} == {"production"}
    assert 'predictor_experiment_broken{model_name="house-prices"} 1.0' in metrics


def test_a_candidate_that_fails_on_a_request_never_costs_the_caller_an_answer():
    with _client(DeclaredExperiment(AB_HALF, Candidate(factor=-1))) as client:
        _experiment_seen(client, "ab")
        keys = [k for k in (f"c{i}" for i in range(50)) if assign_variant(k, 0.5) == "candidate"][:3]
        answers = [client.post("/predict", json=RECORD, headers={"X-Client-ID": k}) for k in keys]
        experiment = client.get("/health").json()["experiment"]
    assert [(a.status_code, a.json()["variant"], a.json()["model_version"]) for a in answers] == [
        (200, "production", "3")
    ] * 3
    assert "failed on a request" in experiment["broken"] and not experiment["running"]


def test_a_candidate_promoted_to_production_ends_the_experiment():
    promoted = FixedRegistry("house-prices", "http://unused")
    promoted.refresh()
    candidate = Candidate()
    candidate.refresh = lambda: setattr(candidate, "_current", promoted.current) or True  # staging is version 3
    with _client(DeclaredExperiment(SHADOW, candidate)) as client:
        experiment = _experiment_seen(client, "off")
    assert experiment["broken"] is None and not experiment["running"]


def test_shadow_scoring_runs_in_a_low_priority_process_and_what_it_cannot_keep_up_with_is_counted():
    """The scorer process is stopped (SIGSTOP) while requests keep coming: once its socket is full, the rest
    is not shadowed and is counted; what was queued is still scored once it runs again, and the last one
    (a 300-row batch, in parts) keeps its row numbers."""
    import signal

    from mlops_sandbox.serve import metrics
    from mlops_sandbox.serve.experiment import ShadowJob, ShadowScorer

    experiment = DeclaredExperiment(SHADOW)
    experiment.refresh(None)
    captured = Captured()
    scorer = ShadowScorer(experiment, captured, list(RECORD), window=0.0)

    def job(request_id: str, rows: int) -> ShadowJob:
        return ShadowJob(request_id, [RECORD] * rows, "3", [float(i) for i in range(rows)])

    dropped = metrics.SHADOW_DROPPED._value.get()
    scorer.submit(job("before-start", 1))  # not started: not shadowed
    scorer.start()
    pid = scorer._scorer.pid

    def lowest_priority() -> bool:
        return os.sched_getscheduler(pid) == os.SCHED_IDLE or os.getpriority(os.PRIO_PROCESS, pid) == 19

    for _ in range(100):  # the process lowers its own priority as it starts
        if lowest_priority():
            break
        time.sleep(0.01)
    assert lowest_priority()
    os.kill(pid, signal.SIGSTOP)
    try:
        submitted = 0
        while metrics.SHADOW_DROPPED._value.get() - dropped < 2:  # the socket's buffer is full
            scorer.submit(job(f"r{submitted}", 1))
            submitted += 1
            assert submitted < 100_000
    finally:
        os.kill(pid, signal.SIGCONT)
    for _ in range(100):  # the candidate catches up
        if len(captured) == submitted - 1:
            break
        time.sleep(0.05)
    scorer.submit(job("batch", 300))
    scorer.stop()
    single = [r for r in captured if r["request_id"] != "batch"]
    assert len(single) == submitted - 1 and metrics.SHADOW_DROPPED._value.get() - dropped == 2
    batch = sorted((r for r in captured if r["request_id"] == "batch"), key=lambda r: r["row"])
    assert [r["row"] for r in batch] == list(range(300))
    assert [r["production_prediction"] for r in batch] == [float(i) for i in range(300)]
    assert all(r["shadow"] and r["model_version"] == "4" and r["inputs"] == RECORD for r in captured)
    with pytest.raises(ProcessLookupError):  # stopped, and reaped
        os.kill(pid, 0)


class Spinning:
    """A candidate (on the numpy path, as ours are) that keeps a CPU busy for `seconds_per_row` for each row it
    predicts."""

    def __init__(self, seconds_per_row: float):
        self.model, self.seconds_per_row = self, seconds_per_row

    def unwrap_python_model(self):
        return self

    def predict_columns(self, columns):
        until = time.thread_time() + self.seconds_per_row * len(columns["area"])
        while time.thread_time() < until:
            pass
        return [area * 1000.0 for area in columns["area"]]


class SpinningCandidate(Candidate):
    def refresh(self) -> bool:
        self._current = ServedModel("house-prices", "4", "staging", "run-2", {}, Spinning(3e-5), HOUSE_PRICES)
        return True


def _on_cpu(pid: int) -> tuple[float, int]:
    """Seconds a process has run on a CPU (/proc/PID/schedstat), and how many times it gave its CPU up (it
    slept, or waited: /proc/PID/status)."""
    ran = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    status = dict(line.split(":\t") for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
    return ran, int(status["voluntary_ctxt_switches"])


def test_the_scorer_process_gives_its_cpu_up_at_least_every_millisecond():
    """SCHED_IDLE makes the scorer yield at once only to the tasks of its own cgroup: a caller, or a proxy in
    front of the service, that wakes on its CPU waits for the scheduler's tick (4 ms at HZ=250). So it never
    runs long without a sleep: 5,000 rows of a candidate that takes 30 µs a row (0.15 s in all, 60 ms for one
    call of SHADOW_BATCH_ROWS) are predicted with a sleep for every millisecond or less of its CPU time.
    (Preemption by others does not count: only the times it gave the CPU up itself.)"""
    from mlops_sandbox.serve.experiment import ShadowJob, ShadowScorer

    experiment = DeclaredExperiment(SHADOW, SpinningCandidate())
    experiment.refresh(None)
    captured = Captured()
    scorer = ShadowScorer(experiment, captured, list(RECORD), window=0.05)
    scorer.start()
    pid = scorer._scorer.pid
    try:
        time.sleep(0.2)  # it has started, and waits for work
        before = _on_cpu(pid)
        for i in range(50):
            scorer.submit(ShadowJob(f"r{i}", [RECORD] * 100, "3", [1.0] * 100))
        for _ in range(300):  # it waits for a second of spare CPU, then predicts them
            if Path(captured.path).read_bytes().count(b"\n") == 5000:  # lines it is still writing are not read
                break
            time.sleep(0.05)
        ran, gave_up = (now - then for now, then in zip(_on_cpu(pid), before, strict=True))
    finally:
        scorer.stop()
    assert len(captured) == 5000 and ran >= 0.15  # the candidate's work was done in that process
    assert gave_up >= ran / 0.001, f"{ran:.3f} s on a CPU, given up {gave_up} times"


def test_the_scorer_process_captures_its_lines_in_the_workers_spool_and_the_workers_shipper_ships_them(tmp_path):
    """The shadow lines never pass through the worker: the scorer process writes segments of its own into the
    spool, closes one once it is old enough (while it runs), and the worker's shipper uploads it; the worker
    counts the rows it is told were captured."""
    from serving_stand_ins import Uploads

    from mlops_sandbox.serve import metrics
    from mlops_sandbox.serve.capture import PredictionCapture
    from mlops_sandbox.serve.experiment import ShadowJob, ShadowScorer

    uploads = Uploads()
    capture = PredictionCapture(uploads, tmp_path, "house_prices", segment_records=1000, segment_seconds=0.5)
    capture.start()
    experiment = DeclaredExperiment(SHADOW)
    experiment.refresh(None)
    scorer = ShadowScorer(experiment, capture, list(RECORD), window=0.0)
    captured, shadowed = metrics.CAPTURED._value.get(), metrics.SHADOW_ROWS._value.get()
    scorer.start()
    pid = scorer._scorer.pid
    for i in range(5):
        scorer.submit(ShadowJob(f"r{i}", [RECORD, {**RECORD, "area": 2000.0}], "3", [1.0, 2.0]))
    for _ in range(200):  # no request comes after these: the scorer closes its segment as it ages
        if sum(body.count(b"\n") for body in list(uploads.values())) == 10:
            break
        time.sleep(0.05)
    running = scorer._scorer is not None and scorer._scorer.alive()
    scorer.stop()
    capture.close()
    assert running  # shipped while the scorer process still ran
    (key,) = uploads
    assert f"-{pid}-" in key  # a segment of the scorer process's own
    rows = [json.loads(line) for line in uploads[key].splitlines()]
    assert sorted((r["request_id"], r["row"]) for r in rows) == [(f"r{i}", row) for i in range(5) for row in (0, 1)]
    assert all(r["shadow"] and r["variant"] == "candidate" and r["model_version"] == "4" for r in rows)
    assert {r["production_prediction"] for r in rows} == {1.0, 2.0}
    assert metrics.CAPTURED._value.get() - captured == metrics.SHADOW_ROWS._value.get() - shadowed == 10
    assert not list(tmp_path.iterdir())  # nothing left in the spool


def test_a_shadow_candidate_that_fails_never_costs_the_caller_an_answer():
    captured = Captured()
    with _client(DeclaredExperiment(SHADOW, Candidate(factor=-1)), captured) as client:
        _experiment_seen(client, "shadow")
        answers = [client.post("/predict", json=RECORD) for _ in range(3)]
        for _ in range(100):  # the scorer process reports the failure
            experiment = client.get("/health").json()["experiment"]
            if experiment["broken"]:
                break
            time.sleep(0.05)
    assert {(a.status_code, a.json()["variant"]) for a in answers} == {(200, "production")}
    assert "failed on a request" in experiment["broken"] and "the candidate broke" in experiment["broken"]
    assert not any(r.get("shadow") for r in captured) and len(captured) == 3


def test_a_failed_candidate_stays_aside_until_the_experiment_is_set_again():
    experiment = DeclaredExperiment({**AB_HALF, "serving_mode.set_at": "2026-11-26T10:00:00+00:00"})
    production = FixedRegistry("house-prices", "http://unused")
    production.refresh()
    experiment.refresh(production.current)
    candidate = experiment.candidate
    assert candidate is not None and candidate.version == "4"
    experiment.fail(candidate, RuntimeError("boom"))
    experiment.refresh(production.current)  # the next poll: the same declaration
    assert experiment.candidate is None and "boom" in experiment.broken
    experiment.tags["serving_mode.set_at"] = "2026-11-26T10:05:00+00:00"  # set again, the same mode
    experiment.refresh(production.current)
    assert experiment.candidate.version == "4" and experiment.broken is None


def test_the_scorer_scores_only_when_the_machine_has_cpu_to_spare():
    """Busy processes on every CPU leave none to spare; once they stop, there is. (/proc/stat counts the
    host's CPUs: this runs where the tests can use them all, as in CI.)"""
    import multiprocessing

    from mlops_sandbox.serve.experiment import SpareCpu

    spare = SpareCpu(seconds=0.2)
    time.sleep(0.3)
    assert spare.enough()  # an idle machine (the unit tests run alone)
    stop = multiprocessing.Event()
    busy = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(os.cpu_count() or 1)]
    for process in busy:
        process.start()
    try:
        time.sleep(0.3)
        spare.enough()  # from here on, every CPU is busy
        time.sleep(0.5)
        assert not spare.enough()
    finally:
        stop.set()
        for process in busy:
            process.join()
    time.sleep(0.3)
    spare.enough()
    time.sleep(0.3)
    assert spare.enough()


def test_cpu_to_spare_is_judged_over_a_span_not_a_moment():
    """Even an idle machine has no CPU to spare until the scorer has looked for `seconds`: a moment's idle CPU
    (a saturated machine has those) is no licence to predict a batch."""
    from mlops_sandbox.serve.experiment import SpareCpu

    spare = SpareCpu(seconds=0.5)
    time.sleep(0.1)
    assert not spare.enough()
    time.sleep(0.1)
    assert not spare.enough()
    time.sleep(0.4)
    assert spare.enough()  # an idle machine (the unit tests run alone), over 0.6 s
    spare.reset()  # work arrives after an idle spell: look again from now
    assert not spare.enough()


def test_the_scorers_own_cpu_time_is_not_spare():
    """The scorer busy on one CPU and others on the rest: no CPU to spare, though part of the busy time was its
    own (across cgroups SCHED_IDLE does not yield, so its time may be the callers'). With nothing else busy,
    what it leaves idle is spare."""
    import multiprocessing

    from mlops_sandbox.serve.experiment import SpareCpu

    spare = SpareCpu(seconds=0.2)
    stop = multiprocessing.Event()
    others = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range((os.cpu_count() or 1) - 1)]
    for process in others:
        process.start()
    try:
        time.sleep(0.3)
        spare.reset()
        _spin_for(0.5)  # this process: the scorer, predicting
        assert not spare.enough()
    finally:
        stop.set()
        for process in others:
            process.join()
    if (os.cpu_count() or 1) > 1:
        spare.reset()
        _spin_for(0.5)  # alone: the other CPUs idle
        assert spare.enough()


@pytest.mark.parametrize(
    "cpu_max, limit", [("150000 100000\n", 1.5), ("max 100000\n", None), ("", None), ("half of one\n", None)]
)
def test_the_cpu_limit_is_read_from_cgroup_v2_cpu_max(tmp_path, cpu_max, limit):
    from mlops_sandbox.serve.experiment import _cpu_limit

    if cpu_max:
        (tmp_path / "cpu.max").write_text(cpu_max)
    assert _cpu_limit(str(tmp_path)) == limit


def test_in_a_cgroup_with_a_cpu_limit_the_scorer_waits_while_the_others_use_it_or_it_is_throttled(
    monkeypatch, tmp_path
):
    """The container's cgroup v2 files (`cpu.max`, `cpu.stat`), written here as the kernel would: a limit of
    one CPU. This machine's own cgroup (v1 here) is never read."""
    from mlops_sandbox.serve.experiment import SpareCpu

    (tmp_path / "cpu.max").write_text("100000 100000\n")  # 1 CPU
    used_usec, throttled = 0, 0

    def cgroup(used: int, times_throttled: int) -> None:
        (tmp_path / "cpu.stat").write_text(
            f"usage_usec {used}\nuser_usec {used}\nsystem_usec 0\nnr_periods 9\nnr_throttled {times_throttled}\n"
        )

    cgroup(used_usec, throttled)
    monkeypatch.setattr(SpareCpu, "CGROUP", str(tmp_path))
    spare = SpareCpu(seconds=0.2)
    assert spare.limit == 1.0

    started = time.monotonic()
    time.sleep(0.3)
    used_usec += int((time.monotonic() - started) * 1e6)  # the workers used the whole CPU meanwhile
    cgroup(used_usec, throttled)
    assert not spare.enough()

    time.sleep(0.3)
    throttled += 1  # little used, but throttled once: the limit was reached
    cgroup(used_usec + 1000, throttled)
    assert not spare.enough()

    time.sleep(0.3)
    cgroup(used_usec + 2000, throttled)  # the limit nearly unused, no throttling: as the host's CPUs allow
    assert spare.enough()  # an idle machine (the unit tests run alone)


def _spin(stop) -> None:
    while not stop.is_set():
        sum(range(10_000))


def _spin_for(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(10_000))


def test_a_scorer_process_that_cannot_be_forked_costs_no_answer_and_leaks_nothing(monkeypatch):
    import errno

    from mlops_sandbox.serve import metrics
    from mlops_sandbox.serve.experiment import ShadowJob, ShadowScorer

    def no_fork() -> int:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    experiment = DeclaredExperiment(SHADOW)
    experiment.refresh(None)
    scorer = ShadowScorer(experiment, Captured(), list(RECORD), window=0.0)
    monkeypatch.setattr(os, "fork", no_fork)
    files = len(os.listdir("/proc/self/fd"))
    dropped = metrics.SHADOW_DROPPED._value.get()
    scorer.start()  # the poll's sync: no process, and no exception
    scorer.submit(ShadowJob("r1", [RECORD], "3", [1.0]))  # a request never forks: not shadowed, counted
    assert scorer._scorer is None and metrics.SHADOW_DROPPED._value.get() - dropped == 1
    assert len(os.listdir("/proc/self/fd")) == files  # its socket and pipe were closed
    scorer.stop()
