"""The bench's CPU accounting (`finpass_pipeline.dev.cpu`) and how `bench` prints it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from finpass_pipeline.dev import cpu
from finpass_pipeline.dev.bench import BenchResult, ceiling_goal, render, render_runs

TICKS = os.sysconf("SC_CLK_TCK")


def test_parse_stat_reads_utime_and_stime_after_an_awkward_command_name() -> None:
    # proc(5): pid (comm) state ppid ... field 14 utime, 15 stime. A comm may hold ") (".
    stat = f"4242 (we ird) (name) S 1 2 3 4 5 6 7 8 9 10 {3 * TICKS} {2 * TICKS} 0 0 20 0"
    assert cpu.parse_stat(stat) == 5.0


def test_this_process_uses_cpu_and_a_missing_one_counts_none() -> None:
    before = cpu.cpu_seconds(os.getpid())
    assert before is not None
    deadline = time.process_time() + 0.1
    while time.process_time() < deadline:
        pass
    after = cpu.cpu_seconds(os.getpid())
    assert after is not None and after >= before + 0.05
    assert cpu.cpu_seconds(2**22 + 1) is None  # beyond pid_max's default range
    assert cpu.total([2**22 + 1]) == 0.0


def test_render_prints_cpu_per_event_and_na_for_an_unknown_broker() -> None:
    r = BenchResult(events=10, pipeline_eps=5.0, db_ceiling_eps=10.0, kafka_ceiling_eps=20.0,
                    naive_eps=1.0, latency_ms={"p99": 1.0},
                    cpu_us_per_event={"consumer": 95.25, "postgres": 60.0, "broker": None,
                                      "ceiling_postgres": 30.5})
    line = render(r).splitlines()[-1]
    assert line == ("CPU µs per event, (c): consumer 95.2, postgres 60.0, sealer n/a, "
                    "sealer_postgres n/a, broker n/a; (a) ceiling postgres 30.5")


def test_children_lists_a_child_process_and_none_of_a_gone_one() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert child.pid in cpu.children(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert cpu.children(2**22 + 1) == []


def test_goal_depends_on_the_process_count_and_runs_show_the_best() -> None:
    assert ceiling_goal(1) == 0.45 and ceiling_goal(2) == 0.70 and ceiling_goal(3) == 0.70

    def run(pipeline: float) -> BenchResult:
        return BenchResult(events=10, pipeline_eps=pipeline, db_ceiling_eps=10.0,
                           kafka_ceiling_eps=20.0, naive_eps=1.0, latency_ms={"p99": 9.0},
                           cpu_us_per_event={"consumer": 80.0, "postgres": 50.0})

    text = render_runs([run(4.0), run(5.0), run(3.0)])
    lines = text.splitlines()
    assert [line.split()[3] for line in lines[1:4]] == ["0.40", "0.50", "0.30"]
    assert "best of 3 runs (by pipeline / min(ceilings)): run 2" in text
    assert "pipeline / min(ceilings)               0.50   goal >= 0.45  ok" in text
    assert render_runs([run(4.0)]) == render(run(4.0))
