"""The walk costs a small constant per step: checking grows linearly with the plan,
whether it has many resources or a few resources and many steps."""

from __future__ import annotations

import time

import pytest

from mdsl.check import check_plan
from mdsl.syntax.parser import parse_text


def migration(apps: int, rounds: int) -> str:
    """`apps` Mastodon-like apps, each moved `rounds` times (15 steps a round)."""
    out = ['plan "scale"', 'host old { ssh = "root@old.example" }', 'host new { ssh = "root@new.example" }']
    steps = []
    for i in range(apps):
        out += [f'postgres db{i} on old {{ database = "app{i}"  password = env("P") }}',
                f'postgres ndb{i} on new {{ database = "app{i}"  fresh = true }}',
                f'dir f{i} on old {{ path = "/srv/app{i}/files"  owner = "a:a"  '
                f'derived "cache" rebuild "rebuild{i}" }}',
                f'dir nf{i} on new {{ path = "/srv/app{i}/files"  owner = "a:a" }}',
                f'service s{i} on old {{ systemd = ["app{i}"]  writes = [db{i}, f{i}] }}',
                f'service ns{i} on new {{ systemd = ["app{i}"]  writes = [ndb{i}, nf{i}]  initially = stopped }}']
        for r in range(rounds):
            d = f"/root/m{i}-{r}"
            steps += [f"  stop s{i}", "  parallel {", f'    dump db{i} to old:"{d}.dump"',
                      f'    archive f{i} to old:"{d}.tar" exclude "cache"', "  }",
                      f'  transfer old:"{d}.dump" to new:"{d}.dump"', f'  transfer old:"{d}.tar" to new:"{d}.tar"',
                      f'  restore new:"{d}.dump" into ndb{i} replace', f'  extract new:"{d}.tar" into nf{i}',
                      f"  start ns{i}", f'  run new "rebuild{i}" writes = [nf{i}]',
                      f'  verify http "https://app{i}.example/health" via = new', f"  stop ns{i}", f"  start s{i}",
                      f'  delete old:"{d}.dump"']
    return "\n".join(out) + "\nsteps {\n" + "\n".join(steps) + "\n}\n"


def _check_seconds(text: str) -> float:
    """CPU seconds of the best of 3 checks: the shape of the growth, not a speed (bench/check_scale.py
    measures speed; a wall-clock bound here failed whenever the machine was busy)."""
    plan = parse_text(text, "scale.plan")
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        check_plan(plan)
        best = min(best, time.process_time() - t)
    return best


@pytest.mark.parametrize("shape", ["many resources", "many rounds"])
def test_check_time_is_linear(shape):
    small, big = ((50, 1), (400, 1)) if shape == "many resources" else ((1, 50), (1, 400))
    t_small = _check_seconds(migration(*small))
    t_big = _check_seconds(migration(*big))
    # 8x the steps; a quadratic walk would take 64x. Allow noise, not a square.
    assert t_big < 20 * t_small + 0.05, (t_small, t_big)
