"""The micro-batcher: merging concurrent requests, keeping order, refusing past the queue."""

import asyncio
import threading
import time

import numpy as np
import pytest

from tropes.http.batching import MicroBatcher, Overloaded


class SlowClassifier:
    version = "v-slow"

    def __init__(self):
        self.calls = []
        self.gate = threading.Event()

    def head_scores(self, texts):  # the batcher encodes through this
        self.gate.wait(5)
        self.calls.append(len(texts))
        return np.array([[float(t.split()[-1])] for t in texts])


class Holder:
    def __init__(self):
        self.classifier = SlowClassifier()


def test_concurrent_requests_are_merged_and_answered_in_order():
    holder = Holder()
    batcher = MicroBatcher(holder, max_batch=64, max_queue=1000)

    async def main():
        first = asyncio.create_task(batcher.submit(["a 0"]))
        await asyncio.sleep(0.05)  # the encoder is now busy with the first request
        rest = [asyncio.create_task(batcher.submit([f"x {i}", f"y {i + 100}"]))
                for i in range(1, 11)]
        await asyncio.sleep(0.05)
        holder.classifier.gate.set()
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(main())
    assert holder.classifier.calls == [1, 20]  # ten waiting requests became one batch
    for i, (predictor, probs, _) in enumerate(rest, 1):
        assert predictor.version == "v-slow"
        assert probs[:, 0].tolist() == [i, i + 100]


def test_past_the_queue_limit_new_work_is_refused():
    holder = Holder()
    batcher = MicroBatcher(holder, max_batch=4, max_queue=3)

    async def main():
        busy = asyncio.create_task(batcher.submit(["a 1", "b 2", "c 3"]))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):
            await batcher.submit(["d 4"])
        holder.classifier.gate.set()
        await busy
        return await batcher.submit(["e 5"])  # accepted again once the queue drains

    _, probs, _ = asyncio.run(main())
    assert probs[0, 0] == 5


def test_encoder_failure_reaches_every_waiting_caller():
    class Broken:
        version = "v-broken"

        def head_scores(self, texts):  # the batcher encodes through this
            time.sleep(0.01)
            raise RuntimeError("encoder exploded")

    holder = Holder()
    holder.classifier = Broken()
    batcher = MicroBatcher(holder)

    async def main():
        return await asyncio.gather(*(batcher.submit(["t 1"]) for _ in range(3)),
                                    return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)


def test_a_small_request_is_not_held_behind_a_big_batch():
    holder = Holder()
    batcher = MicroBatcher(holder, max_batch=64, max_queue=10_000)
    done_order = []

    async def timed(name, texts):
        result = await batcher.submit(texts)
        done_order.append(name)
        return result

    async def main():
        first = asyncio.create_task(timed("first", ["a 0"]))
        await asyncio.sleep(0.05)  # the encoder is busy with the first request
        big = asyncio.create_task(timed("big", [f"b {i}" for i in range(300)]))
        await asyncio.sleep(0.01)
        small = asyncio.create_task(timed("small", ["s 7"]))
        await asyncio.sleep(0.01)
        holder.classifier.gate.set()
        return await first, await big, await small

    _, (_, big_probs, _), (_, small_probs, _) = asyncio.run(main())
    assert done_order == ["first", "small", "big"]
    assert big_probs[:, 0].tolist() == list(range(300))  # pieces reassembled in order
    assert small_probs[:, 0].tolist() == [7]
    assert max(holder.classifier.calls) <= 64 and sum(holder.classifier.calls) == 302


def test_a_split_request_is_answered_by_one_model_version():
    holder = Holder()
    batcher = MicroBatcher(holder, max_batch=4, max_queue=1000)
    old = holder.classifier
    old.gate.set()

    class Newer(SlowClassifier):
        version = "v-new"

    async def main():
        task = asyncio.create_task(batcher.submit([f"t {i}" for i in range(10)]))
        while old.calls == []:
            await asyncio.sleep(0.001)
        holder.classifier = Newer()  # swapped after the first piece
        holder.classifier.gate.set()
        return await task

    classifier, probs, _ = asyncio.run(main())
    assert classifier is old and sum(old.calls) == 10 and holder.classifier.calls == []
    assert probs[:, 0].tolist() == list(range(10))


def test_admission_is_in_encoder_seconds():
    holder = Holder()
    batcher = MicroBatcher(holder, max_batch=64, max_queue=100_000, max_queue_seconds=5.0)
    batcher.seconds_per_passage = 0.1  # as measured on a slow encoder

    async def main():
        busy = asyncio.create_task(batcher.submit([f"a {i}" for i in range(40)]))  # 4 s
        await asyncio.sleep(0.02)
        with pytest.raises(Overloaded, match="s of encoder work"):
            await batcher.submit([f"b {i}" for i in range(20)])  # 6 s > 5 s
        small = asyncio.create_task(batcher.submit(["c 1"]))  # 4.1 s: admitted
        await asyncio.sleep(0.02)
        holder.classifier.gate.set()
        await busy
        return await small

    _, probs, _ = asyncio.run(main())
    assert probs[0, 0] == 1
    assert batcher.seconds_per_passage is not None


def test_work_whose_caller_left_is_not_encoded():
    holder = Holder()
    batcher = MicroBatcher(holder, max_batch=64, max_queue=1000)

    async def main():
        first = asyncio.create_task(batcher.submit(["a 0"]))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(batcher.submit([f"g {i}" for i in range(50)]))
        await asyncio.sleep(0.01)
        gone.cancel()  # the client disconnected
        await asyncio.sleep(0.01)
        holder.classifier.gate.set()
        await first
        return await batcher.submit(["z 3"])

    _, probs, _ = asyncio.run(main())
    assert holder.classifier.calls == [1, 1] and probs[0, 0] == 3
    assert batcher.waiting == 0


class TimedClassifier:
    """Takes `per` seconds per passage, like a real encoder on a busy CPU."""

    version = "v-timed"

    def __init__(self, per: float):
        self.per = per
        self.calls = []

    def head_scores(self, texts):  # the batcher encodes through this
        time.sleep(self.per * len(texts))
        self.calls.append(len(texts))
        return np.array([[float(t.split()[-1])] for t in texts])


async def timed_small(batcher, i):
    start = time.monotonic()
    try:
        _, probs, _ = await batcher.submit([f"s {i}"])
    except Overloaded as exc:
        return "refused", exc.retry_after_s
    assert probs[0, 0] == i
    return "served", time.monotonic() - start


def test_small_requests_among_big_batches_are_served_within_budget_or_refused():
    holder = Holder()
    holder.classifier = TimedClassifier(0.01)
    batcher = MicroBatcher(holder, max_batch=64, max_queue=100_000, max_wait_seconds=0.1)

    async def main():
        await batcher.submit(["w 0"])  # measures the seconds per passage
        big = [asyncio.create_task(batcher.submit([f"b {j}" for j in range(120)]))
               for _ in range(2)]
        small = []
        for i in range(40):
            await asyncio.sleep(0.015)
            small.append(asyncio.create_task(timed_small(batcher, i)))
        return await asyncio.gather(*small), await asyncio.gather(*big)

    small, big = asyncio.run(main())
    served = [seconds for kind, seconds in small if kind == "served"]
    assert len(served) >= 10, small  # most fit: calls are short while small requests come
    assert max(served) <= 0.3 + 0.1, sorted(served)[-5:]  # three waits + slack, not 0.64 s
    assert all(after in (1, 2) for kind, after in small if kind == "refused")
    for _, probs, _ in big:  # the big requests were still answered whole and in order
        assert probs[:, 0].tolist() == list(range(120))
    # while small requests came, calls held one wait of work: 0.1 s / 0.01 s
    assert max(holder.classifier.calls[1:6]) <= 10, holder.classifier.calls


def test_without_small_requests_calls_stay_full_size():
    holder = Holder()
    holder.classifier = TimedClassifier(0.0)
    batcher = MicroBatcher(holder, max_batch=64, max_queue=100_000, max_wait_seconds=0.1)
    batcher.seconds_per_passage = 0.01

    async def main():
        return await batcher.submit([f"b {j}" for j in range(200)])

    asyncio.run(main())
    assert holder.classifier.calls == [64, 64, 64, 8]


def test_a_small_request_not_started_in_time_is_refused_not_held():
    holder = Holder()
    batcher = MicroBatcher(holder, max_batch=64, max_queue=100_000, max_wait_seconds=0.1)
    batcher.seconds_per_passage = 0.0001  # the estimate says it fits; the encoder stalls

    async def main():  # a large request (not held to the wait) stalls the encoder
        first = asyncio.create_task(batcher.submit([f"a {i}" for i in range(8)]))
        await asyncio.sleep(0.02)
        late = asyncio.create_task(batcher.submit(["s 5"]))
        await asyncio.sleep(0.25)  # past twice the wait, not yet three times
        holder.classifier.gate.set()
        first = await first
        with pytest.raises(Overloaded, match="not started within 0.2 s") as refused:
            await late
        return first, refused.value.retry_after_s

    (_, probs, _), after = asyncio.run(main())
    assert probs[:, 0].tolist() == list(range(8)) and after in (1, 2)
    assert batcher.waiting == 0


def test_a_small_request_stalled_mid_encoding_is_refused_in_time():
    holder = Holder()
    batcher = MicroBatcher(holder, max_batch=64, max_queue=100_000, max_wait_seconds=0.05)

    async def main():
        start = time.monotonic()
        outcome = await timed_small(batcher, 3)  # the encoder hangs on its call
        took = time.monotonic() - start
        holder.classifier.gate.set()
        await asyncio.sleep(0.05)
        return outcome, took

    (kind, after), took = asyncio.run(main())
    assert kind == "refused" and after in (1, 2)
    assert took < 0.05 * 4 + 0.1  # four waits, not the 5 s the encoder hung


def test_thread_tuner_uses_the_cheaper_choice_and_keeps_checking_the_other():
    from tropes.http.threads import ThreadTuner

    chosen = []
    tuner = ThreadTuner(2, chosen.append)
    cost = {2: 0.10, 1: 0.03}  # as measured with a core busy elsewhere
    picks = []
    for _ in range(48):
        threads = tuner.choose()
        picks.append(threads)
        tuner.record(threads, cost[threads] * 8, 8)
    assert picks[:2] == [2, 1]  # each tried once
    assert picks[2:].count(1) > 40 and 2 in picks[2:]  # mostly 1, 2 retried now and then
    cost = {2: 0.01, 1: 0.03}  # the machine went quiet
    for _ in range(48):
        threads = tuner.choose()
        picks.append(threads)
        tuner.record(threads, cost[threads] * 8, 8)
    assert picks[-12:].count(2) >= 10
    assert chosen == [p for i, p in enumerate(picks) if i == 0 or picks[i - 1] != p]

