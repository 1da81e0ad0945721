"""``ditcache.tools.plots``: the Pareto front drawn by the bench plot keeps only undominated points."""

from __future__ import annotations

from ditcache.tools.plots import pareto_front


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = [(1.0, 60.0), (2.0, 50.0), (1.5, 45.0), (3.0, 40.0), (2.5, 38.0), (3.0, 35.0)]
    front = pareto_front(points)
    assert front == [(1.0, 60.0), (2.0, 50.0), (3.0, 40.0)]
    for x, y in points:  # every point is dominated by (or is) a point of the front
        assert any(fx >= x and fy >= y for fx, fy in front)
