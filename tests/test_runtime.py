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

    def scores(self, texts):
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
    for i, (predictor, probs) in enumerate(rest, 1):
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

    _, probs = asyncio.run(main())
    assert probs[0, 0] == 5


def test_encoder_failure_reaches_every_waiting_caller():
    class Broken:
        version = "v-broken"

        def scores(self, texts):
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
