"""The tile plan: covers the image with equal, never padded tiles whose weights sum to one."""

import numpy as np
import pytest

from tiledehaze.errors import ConfigError
from tiledehaze.plan import TilePlan


@pytest.mark.parametrize("h,w,tile,overlap,halo", [
    (3000, 5000, 1024, 32, 7), (1025, 1023, 1024, 32, 7), (777, 4099, 256, 40, 7),
    (100, 60, 1024, 32, 7), (513, 2049, 128, 127, 20),
])
def test_tiles_cover_the_image_inside_its_bounds(h, w, tile, overlap, halo):
    plan = TilePlan(h, w, tile=tile, overlap=overlap, halo=halo)
    cover = np.zeros((h, w), np.int32)
    shapes = set()
    for t in plan:
        assert 0 <= t.y0 < t.y1 <= h and 0 <= t.x0 < t.x1 <= w  # never outside: no padding
        shapes.add((t.y1 - t.y0, t.x1 - t.x0))
        cover[t.y0:t.y1, t.x0:t.x1] += 1
    assert cover.min() >= 1
    assert len(shapes) == 1  # every tile has the same shape (batching, TensorRT profiles)
    th, tw = shapes.pop()
    assert th <= tile and tw <= tile
    for spans in (plan.rows, plan.cols):
        for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
            assert e0 - s1 >= overlap


@pytest.mark.parametrize("h,w", [(3000, 5000), (1100, 999), (64, 4000)])
def test_weights_are_a_partition_of_unity_that_ignores_the_halo(h, w):
    halo = 7
    plan = TilePlan(h, w, tile=512, overlap=32, halo=halo)
    total = np.zeros((h, w))
    for t in plan:
        total[t.y0:t.y1, t.x0:t.x1] += plan.row_weights[t.row][:, None] * plan.col_weights[t.col][None, :]
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    # pixels within `halo` of an interior tile edge get no weight, and the next pixel some
    for spans, weights in ((plan.rows, plan.row_weights), (plan.cols, plan.col_weights)):
        starts = [wt[:halo + 1] for (s, _), wt in zip(spans, weights) if s > 0]
        stops = [wt[::-1][:halo + 1] for (_, e), wt in zip(spans, weights) if e < (h if spans is plan.rows else w)]
        assert len(starts) == len(stops) == len(spans) - 1
        assert all(edge[:halo].max() == 0 and edge[halo] > 0 for edge in starts + stops)
    # the image border is never darkened: the weights there come from full-weight edges
    assert total[0].min() > 0.999 and total[:, -1].min() > 0.999


def test_image_smaller_than_a_tile_is_one_tile_of_its_own_size():
    plan = TilePlan(300, 200, tile=1024, overlap=32, halo=7)
    assert len(plan) == 1 and plan[0].y1 == 300 and plan[0].x1 == 200
    np.testing.assert_array_equal(plan.row_weights[0], 1.0)


def test_plan_holds_no_pixels_and_describes_itself():
    plan = TilePlan(30000, 30000, tile=1024, overlap=32, halo=7)
    assert "30000x30000" in str(plan) and "tiles" in str(plan)
    y = plan.rows[1][0]  # first row of the second tile row: shared with the first
    assert plan.rows_covering(y, y + 1) == [0, 1]
    assert plan[len(plan) - 1].y1 == 30000
    with pytest.raises(IndexError):
        plan[len(plan)]


def test_invalid_geometry_is_refused_clearly():
    with pytest.raises(ConfigError, match="overlap"):
        TilePlan(100, 100, tile=64, overlap=10, halo=7)
    with pytest.raises(ConfigError, match="larger than the overlap"):
        TilePlan(100, 100, tile=32, overlap=32, halo=7)
