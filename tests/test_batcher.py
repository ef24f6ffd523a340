"""Micro-batching of the recommendation handlers' model calls (serving/batcher.py)."""

import asyncio

import pytest

from model.baselines import ease_weights, training_inputs
from model.config import preset
from model.ease import Ease
from model.inference import Recommender
from model.lifecycle import train_and_register
from model.registry import Registry
from serving.batcher import Batcher
from tests.model_fixtures import cyclic_data


@pytest.fixture(scope="module")
def recommender(tmp_path_factory):
    registry, data = Registry(tmp_path_factory.mktemp("models")), cyclic_data(users=60, items=30)
    report = train_and_register(data, registry, *preset("tiny", epochs=3), progress=False)
    served = Recommender.load(registry.path(report.version))
    served.ease = Ease(ease_weights(training_inputs(data, "validation"), 30, 50.0).numpy(), 2.0, 50.0)  # reads `seen`
    return served


class Counted:
    """A recommender whose batch calls are counted; they fail while `broken`, or when they hold `poison`."""

    def __init__(self, inner, poison=None):
        self.inner, self.calls, self.broken, self.poison = inner, [], False, poison

    def recommend_batch(self, histories, k, excludes, idle, seen):
        self.calls.append(len(histories))
        if self.broken or self.poison in histories:
            raise RuntimeError("model down")
        return self.inner.recommend_batch(histories, k, excludes, idle, seen)


REQUESTS = [  # history, k, excluded, seen
    ([("i1", "view")], 3, set(), {"i1", "i2", "i3"}),
    ([("i5", "view"), ("i6", "click")], 5, {"i7"}, {"i5", "i6", "i7", "i12"}),
    ([("nope", "view")], 4, set(), set()),
    ([("i20", "purchase")] * 3, 2, {"i21", "i22"}, {"i20", "i21", "i22"}),
]


def test_the_calls_of_one_turn_are_one_batch_and_each_gets_its_own_answer(recommender):
    model, other = Counted(recommender), Counted(recommender)
    batcher = Batcher()

    async def requests():
        calls = [batcher.recommend(model, h, k, ex, 60.0, seen) for h, k, ex, seen in REQUESTS]
        calls.append(batcher.recommend(other, *REQUESTS[0][:3], 60.0, REQUESTS[0][3]))
        return await asyncio.gather(*calls)

    answers = asyncio.run(requests())
    assert model.calls == [4] and other.calls == [1]  # one call per model for the whole turn
    for (history, k, exclude, seen), answer in zip([*REQUESTS, REQUESTS[0]], answers):
        alone = recommender.recommend(history, k, exclude, 60.0, seen)
        assert [i for i, _ in answer] == [i for i, _ in alone] and len(answer) <= k
        assert [s for _, s in answer] == pytest.approx([s for _, s in alone], abs=1e-4)
    assert answers[2] == []  # an unknown history: the cold-start path answers


def test_a_failed_batch_tries_each_request_alone_so_only_the_failing_one_falls_back(recommender):
    poison = [("i9", "view")]
    model, batcher = Counted(recommender, poison), Batcher()

    async def turn(histories):
        calls = (batcher.recommend(model, h, 3, set(), None, set()) for h in histories)
        return await asyncio.gather(*calls, return_exceptions=True)

    first, bad, last = asyncio.run(turn([REQUESTS[0][0], poison, REQUESTS[1][0]]))
    assert model.calls == [3, 1, 1, 1]  # the batch, then each alone
    assert isinstance(bad, RuntimeError) and "model down" in str(bad)
    assert [len(first), len(last)] == [3, 3]
    model.broken = True
    failed = asyncio.run(turn([REQUESTS[0][0], REQUESTS[1][0]]))
    assert all(isinstance(err, RuntimeError) for err in failed) and failed[0] is not failed[1]  # tracebacks never mix
    model.broken = False
    assert [len(answer) for answer in asyncio.run(turn([REQUESTS[0][0]]))] == [3]
    assert batcher.turns.waiting == {}


def test_a_cancelled_request_is_not_scored(recommender):
    model, batcher = Counted(recommender), Batcher()

    async def turn():
        gone = asyncio.ensure_future(batcher.recommend(model, REQUESTS[0][0], 3, set(), None, set()))
        kept = asyncio.ensure_future(batcher.recommend(model, REQUESTS[1][0], 3, set(), None, set()))
        await asyncio.sleep(0)  # both are waiting for the flush
        gone.cancel()
        return await kept

    assert len(asyncio.run(turn())) == 3 and model.calls == [1]


def test_no_request_is_left_waiting_whatever_the_model_call_returns_or_raises(recommender):
    """A batch answered short, or a call interrupted by a BaseException, answers every request with
    an error of its own within the timeout (no request hangs until its client gives up)."""
    model, batcher = Counted(recommender), Batcher()

    class Interrupted(BaseException):
        pass

    def short(histories, k, excludes, idle, seen):
        return recommender.recommend_batch(histories, k, excludes, idle, seen)[1:]

    def interrupted(histories, k, excludes, idle, seen):
        raise Interrupted

    async def turn():
        calls = (batcher.recommend(model, h, 3, set(), None, set()) for h in (REQUESTS[0][0], REQUESTS[1][0]))
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)

    for broken in (short, interrupted):  # asyncio logs the interruption; the requests must still be answered
        model.recommend_batch = broken
        first, second = asyncio.run(turn())
        assert isinstance(first, RuntimeError) and isinstance(second, RuntimeError) and first is not second
    assert batcher.turns.waiting == {}
