"""The one-line progress of `pdistill run` and the driver's reading of a loss history."""

from mlflow.entities import Metric

from orchestrator.campaign import current_attempt, latest


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
