"""The one-line progress of `pdistill run` and the driver's and the API's reading of a loss
history."""

from mlflow.entities import Metric

from orchestrator.history import at, current_attempt, latest, lineage


def _m(step: int, seconds: float, value: float = 1.0) -> Metric:
    return Metric("teacher/loss", value, int(seconds * 1000), step)


def test_a_restarted_stage_counts_from_its_restart() -> None:
    # Logged 50, 100, 150 (10 s apart); killed; restarted from 0 and logged 50, 100.
    history = [_m(50, 10), _m(100, 20), _m(150, 30), _m(50, 100), _m(100, 105, 0.5)]
    points = current_attempt(list(reversed(history)))  # MLflow gives no order
    assert [(p.step, p.timestamp) for p in points] == [(50, 100_000), (100, 105_000)]
    # 50 updates in 5 s: 10/s, 200 to go.
    assert latest(history, 300) == "update 100/300, loss 0.5, eta 20s"


def test_a_single_point_has_no_eta_and_none_says_starting() -> None:
    assert latest([_m(50, 10, 0.25)], 300) == "update 50/300, loss 0.25"
    assert latest([], 300) == "starting"


def test_a_pause_without_log_points_is_not_in_the_eta() -> None:
    # 10 updates/s; then nothing for 10 minutes (a driver down; the stage went on from the
    # update it had logged last), then 10 updates/s again: the ETA is at 10/s, not at the 0.3/s
    # that the whole span would give.
    history = [_m(10 * i, i) for i in range(1, 6)] + [_m(60, 605), _m(70, 606, 0.5)]
    assert latest(history, 300) == "update 70/300, loss 0.5, eta 23s"


def test_the_lineage_of_a_restarted_round_is_the_curve_of_its_model() -> None:
    # Logged 10…80; lost; went on from its checkpoint at 50 (logging 60, 70); lost again
    # before logging anything; then from 50 again, logging 60.
    first = [_m(10 * i, i) for i in range(1, 9)]
    history = [*first, _m(60, 20, 0.5), _m(70, 21, 0.4), _m(60, 40, 0.45)]
    kept = lineage(list(reversed(history)))  # MLflow gives no order
    assert [(m.step, m.value) for m in kept] == [
        *((10 * i, 1.0) for i in range(1, 6)),
        (60, 0.45),
    ]


def _start(step: int, seconds: float) -> Metric:
    return Metric("train/start", step, int(seconds * 1000), step)


def test_a_restart_counts_from_its_start_before_it_logs() -> None:
    # Logged 10…80 (start 0); lost; went on from its checkpoint at 50 and has logged nothing
    # yet: it is at update 50 with the loss logged there, and the old 60…80 lead nowhere.
    first = [_m(10 * i, i, 1.0 - i / 10) for i in range(1, 9)]
    starts = [_start(0, 0), _start(50, 30)]
    assert current_attempt(first, starts) == []
    assert at(first, list(reversed(starts))) == (50, 0.5)
    assert [m.step for m in lineage(first, starts)] == [10, 20, 30, 40, 50]
    assert latest(first, 300, starts) == "resuming from update 50/300"
    # Once it logs, it counts from there; 60 is the new attempt's.
    history = [*first, _m(60, 31, 0.45), _m(70, 32, 0.4)]
    assert [m.step for m in current_attempt(history, starts)] == [60, 70]
    assert [(m.step, m.value) for m in lineage(history, starts)][-3:] == [
        (50, 0.5),
        (60, 0.45),
        (70, 0.4),
    ]
    assert latest(history, 300, starts) == "update 70/300, loss 0.4, eta 23s"
    # Started again from the beginning: nothing of before is its model, and it says so.
    again = [*starts, _start(0, 40)]
    assert (at(history, again), lineage(history, again)) == ((0, None), [])
    assert latest(history, 300, again) == "starting"


def test_the_first_start_changes_nothing() -> None:
    history = [_m(10 * i, i) for i in range(1, 4)]
    starts = [_start(0, 1)]  # logged in the same millisecond as update 10: before it
    assert current_attempt(history, starts) == current_attempt(history) == history
    assert lineage(history, starts) == history
    assert at(history, starts) == at(history) == (30, 1.0)
    assert at([], []) == (0, None)
