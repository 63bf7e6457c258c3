import pytest

from clrun.metrics import compute_metrics


def test_metrics_by_hand():
    matrix = [[90.0, 10.0, 5.0],
              [70.0, 80.0, 20.0],
              [50.0, 60.0, 85.0]]
    initial = [10.0, 12.0, 8.0]
    m = compute_metrics(matrix, initial)
    assert m.acc == pytest.approx((50 + 60 + 85) / 3)
    assert m.bwt == pytest.approx(((50 - 90) + (60 - 80)) / 2)
    assert m.fwt == pytest.approx(((10 - 12) + (20 - 8)) / 2)
    # forgetting: best earlier accuracy minus final, over all but the last task
    assert m.forgetting == pytest.approx(((90 - 50) + (80 - 60)) / 2)
    assert m.per_task_acc == [50.0, 60.0, 85.0]


def test_single_row_matrix_has_no_transfer_metrics():
    m = compute_metrics([[80.0, 90.0]], [50.0, 50.0])
    assert m.acc == pytest.approx(85.0)
    assert m.bwt is None and m.fwt is None and m.forgetting is None
